"""Artifact reader: open a zip, gate on MANIFEST.json, check the central directory against it.

Nothing here writes to disk; extraction lives in extract.py. Every problem found in the
central directory (unsafe or unlisted names, duplicates, links, size lies) is found at
open time, before a single byte is extracted.
"""

from __future__ import annotations

import os
import time
import zipfile
import zlib
from typing import IO, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

from cosyinstall.artifact import MANIFEST_NAME, ArtifactManifest, FileEntry
from cosyinstall.boundedjson import MAX_BYTES
from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import check_member_mode, check_member_name, check_raw_name, fold
from cosyinstall.streams import copy_verified
from cosyinstall.zipcheck import CheckedZip, check_zip
from cosyinstall.zipraw import DEFLATE64, check_readable, open_member

__all__ = ["ArtifactReader", "MANIFEST_LIMIT", "ZIP_ERRORS", "ZipReader", "checked", "has_manifest", "member_time", "open_zip"]

MANIFEST_LIMIT = MAX_BYTES
# What zipfile raises on damaged data inside a member (bad CRC, broken deflate stream).
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


def open_zip(path: str) -> CheckedZip:
    """Open a zip through zipcheck (structure, local headers, bounds), or say in one sentence why not.

    Every reader of an artifact, a hand-made zip or an archive inside one opens it here, so
    no zip is read that the installer has not checked itself.
    """
    try:
        return check_zip(path)
    except FileNotFoundError:
        raise ArtifactRejected("%s is missing" % path) from None
    except OSError as exc:
        raise ArtifactRejected(
            "%s is not a readable zip (%s); it is probably truncated or corrupt" % (path, exc),
            "upload it again and compare its size with the one in SHA256SUMS",
        ) from exc


def checked(path: str, archive: Optional[object]) -> CheckedZip:
    """`archive` if zipcheck made it; anything else (a zipfile.ZipFile) is closed and re-opened checked."""
    if isinstance(archive, CheckedZip):
        return archive
    if archive is not None:
        archive.close()  # type: ignore[attr-defined]
    return open_zip(path)


def member_time(info: zipfile.ZipInfo) -> float:
    """A member's timestamp (local time, as zip stores it) in seconds since the epoch."""
    try:
        return time.mktime(tuple(info.date_time) + (0, 0, -1))  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        return 315532800.0  # 1980-01-01, the earliest a zip can say


def has_manifest(archive: CheckedZip) -> bool:
    return any(info.filename == MANIFEST_NAME for info in archive.infolist())


_Reader = TypeVar("_Reader", bound="ZipReader")


class ZipReader:
    """What every reader of an opened zip shares: verified streaming of members by key, and closing.

    Subclasses set `path`, `label` and `zip`, and say how a key finds its ZipInfo and which
    members (key, size, sha256 or None) a full check must read.
    """

    path: str
    label: str
    zip: CheckedZip

    def _info(self, key: str) -> zipfile.ZipInfo:
        raise NotImplementedError

    def _checked_members(self) -> Iterable[Tuple[str, int, Optional[str]]]:
        raise NotImplementedError

    def copy(
        self, key: str, size: int, sha256: Optional[str], dst: Optional[IO[bytes]],
        advance: Optional[Callable[[int], None]] = None,
    ) -> str:
        """Stream member `key` into dst (or just verify it), enforcing size, CRC-32 and sha256 if given.

        Returns the sha256; damage names the member.
        """
        what = "%s in %s" % (key, self.label)
        try:
            src = open_member(self.zip, self._info(key), self.path)
            try:
                return copy_verified(src, dst, size, sha256, what, advance)
            finally:
                src.close()
        except ZIP_ERRORS as exc:
            raise ArtifactRejected("%s is corrupt (%s)" % (what, exc)) from exc

    def mtime(self, key: str) -> float:
        return member_time(self._info(key))

    def find_corrupt_member(self, advance: Optional[Callable[[int], None]] = None) -> Optional[str]:
        """Verify every member; return the first damage sentence, or None if all are good."""
        for key, size, sha256 in self._checked_members():
            try:
                self.copy(key, size, sha256, None, advance)
            except ArtifactRejected as exc:
                return exc.message
        return None

    def close(self) -> None:
        self.zip.close()

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArtifactReader(ZipReader):
    """An opened artifact whose central directory has been checked against its manifest."""

    handmade = False

    def __init__(self, path: str, expected_kind: Optional[str] = None, archive: Optional[object] = None) -> None:
        self.path = path
        self.label = os.path.basename(path)
        self.zip = checked(path, archive)
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
            ) from None
        if info.file_size > MANIFEST_LIMIT:
            raise ArtifactRejected("%s in %s is %d bytes, more than the %d bytes any real manifest needs"
                                   % (MANIFEST_NAME, self.path, info.file_size, MANIFEST_LIMIT))
        try:
            check_readable(info, self.path)
            src = open_member(self.zip, info, self.path)
            try:
                raw = src.read(info.file_size + 1)
                if len(raw) != info.file_size or src.read(1):
                    raise zipfile.BadZipFile("its size differs from the central directory")
            finally:
                src.close()
        except ZIP_ERRORS as exc:
            raise ArtifactRejected("%s in %s is damaged (%s)" % (MANIFEST_NAME, self.path, exc)) from exc
        return ArtifactManifest.from_bytes(raw, "%s in %s" % (MANIFEST_NAME, self.label))

    def _check_directory(self) -> Dict[str, zipfile.ZipInfo]:
        # A delta's members expected on the box are listed but not stored: here they are unlisted.
        listed = {e.path: e for e in self.manifest.stored_files()}
        found: Dict[str, zipfile.ZipInfo] = {}
        folded: Dict[str, str] = {}
        for info in self.zip.infolist():
            name = info.filename
            check_raw_name(info, self.label)
            if name == MANIFEST_NAME and MANIFEST_NAME not in found:
                found[name] = info
                continue
            if info.is_dir():
                # Directory entries carry no data; their names and modes must still be safe.
                check_member_name(name.rstrip("/"), self.label)
                check_member_mode(name, info.external_attr, self.label, directory=True)
                continue
            check_member_name(name, self.label)
            check_member_mode(name, info.external_attr, self.label)
            if name in found or fold(name) in folded:
                raise ArtifactRejected("%s holds the member %s twice" % (self.path, name))
            folded[fold(name)] = name
            check_readable(info, self.path)
            if info.compress_type == DEFLATE64:
                raise ArtifactRejected(
                    "%s: member %s is Deflate64, which cosybuild never writes" % (self.path, name),
                    "build the artifact again with cosybuild pack",
                )
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
        return open_member(self.zip, self.infos[entry.path], self.path)

    def copy_member(
        self, entry: FileEntry, dst: Optional[IO[bytes]], advance: Optional[Callable[[int], None]] = None
    ) -> str:
        """Stream one member into dst (or just verify it); damage names the member."""
        return self.copy(entry.path, entry.size, entry.sha256, dst, advance)

    def _info(self, key: str) -> zipfile.ZipInfo:
        return self.infos[key]

    def _checked_members(self) -> Iterable[Tuple[str, int, Optional[str]]]:
        return ((e.path, e.size, e.sha256) for e in self.manifest.stored_files())
