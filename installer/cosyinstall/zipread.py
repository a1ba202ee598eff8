"""Artifact reader: open a zip, gate on MANIFEST.json, check the central directory against it.

Nothing here writes to disk; extraction lives in extract.py.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from typing import IO, Callable, Dict, Iterator, List, Optional, Tuple

from cosyinstall.artifact import MANIFEST_NAME, ArtifactManifest, FileEntry
from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import check_member_mode, check_member_name
from cosyinstall.streams import copy_verified

__all__ = ["ArtifactReader", "MANIFEST_LIMIT", "ZIP_ERRORS"]

MANIFEST_LIMIT = 256 * 1024 * 1024
# What zipfile raises on damaged data inside a member (bad CRC, broken deflate stream).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class ArtifactReader:
    """An opened artifact whose central directory has been checked against its manifest."""

    def __init__(self, path: str, expected_kind: Optional[str] = None) -> None:
        self.path = path
        self.label = os.path.basename(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise ArtifactRejected("%s is missing" % path)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ArtifactRejected(
                "%s is not a readable zip (%s); it is probably truncated or corrupt" % (path, exc),
                "upload it again and compare its size with the one in SHA256SUMS",
            )
        try:
            self.manifest = self._read_manifest()
            if expected_kind is not None and self.manifest.kind != expected_kind:
                raise ArtifactRejected(
                    "%s holds a %s artifact where a %s artifact was expected"
                    % (path, self.manifest.kind, expected_kind)
                )
            self.infos = self._check_directory()
        except BaseException:
            self.zip.close()
            raise

    def _read_manifest(self) -> ArtifactManifest:
        try:
            info = self.zip.getinfo(MANIFEST_NAME)
        except KeyError:
            raise ArtifactRejected(
                "%s has no %s, so nothing in it can be verified" % (self.path, MANIFEST_NAME),
                "build it with cosybuild pack",
            )
        if info.file_size > MANIFEST_LIMIT:
            raise ArtifactRejected("%s in %s is implausibly large" % (MANIFEST_NAME, self.path))
        try:
            raw = self.zip.read(info)
        except ZIP_ERRORS as exc:
            raise ArtifactRejected("%s in %s is damaged (%s)" % (MANIFEST_NAME, self.path, exc))
        return ArtifactManifest.from_bytes(raw, "%s in %s" % (MANIFEST_NAME, self.label))

    def _check_directory(self) -> Dict[str, zipfile.ZipInfo]:
        listed = self.manifest.by_path()
        found: Dict[str, zipfile.ZipInfo] = {}
        for info in self.zip.infolist():
            name = info.filename
            if name == MANIFEST_NAME and MANIFEST_NAME not in found:
                found[name] = info
                continue
            if info.is_dir():
                # Directory entries carry no data; their names must still be safe.
                check_member_name(name.rstrip("/"), self.label)
                continue
            check_member_name(name, self.label)
            check_member_mode(name, info.external_attr, self.label)
            if name in found:
                raise ArtifactRejected("%s holds the member %s twice" % (self.path, name))
            if name not in listed:
                raise ArtifactRejected(
                    "%s holds %s, which its manifest does not list" % (self.path, name)
                )
            entry = listed[name]
            if info.file_size != entry.size:
                raise ArtifactRejected(
                    "%s: member %s is %d bytes in the zip but %d in its manifest"
                    % (self.path, name, info.file_size, entry.size)
                )
            found[name] = info
        missing = [p for p in listed if p not in found]
        if missing:
            more = " and %d more" % (len(missing) - 1) if len(missing) > 1 else ""
            raise ArtifactRejected("%s lacks %s%s, which its manifest lists" % (self.path, missing[0], more))
        found.pop(MANIFEST_NAME, None)
        return found

    def entries(self, prefix: str = "") -> List[FileEntry]:
        return [e for e in self.manifest.files if e.path.startswith(prefix)]

    def open(self, entry: FileEntry) -> IO[bytes]:
        return self.zip.open(self.infos[entry.path])

    def copy_member(
        self, entry: FileEntry, dst: Optional[IO[bytes]], advance: Optional[Callable[[int], None]] = None
    ) -> None:
        """Stream one member into dst (or just verify it); damage names the member."""
        what = "%s in %s" % (entry.path, self.label)
        try:
            with self.open(entry) as src:
                copy_verified(src, dst, entry.size, entry.sha256, what, advance)
        except ZIP_ERRORS as exc:
            raise ArtifactRejected("%s is corrupt (%s)" % (what, exc))

    def find_corrupt_member(self, advance: Optional[Callable[[int], None]] = None) -> Optional[str]:
        """Verify every member; return the first damage sentence, or None if all are good."""
        for entry in self.manifest.files:
            try:
                self.copy_member(entry, None, advance)
            except ArtifactRejected as exc:
                return exc.message
        return None

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "ArtifactReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
