"""Every wheel is checked before it is packed: the installer's zip checks, safe names, RECORD complete and true.

uv installs a wheel whose members escape with `../` or an absolute name by silently dropping
them, and does not check RECORD's hashes, so a bad wheel must not reach the box. A wheel passes
when cosyinstall.zipcheck accepts the zip (one reading, no overlap, local headers agree,
stored/deflate only), every name is a safe relative path (cosyinstall.names), exactly one
`*.dist-info/RECORD` exists at the top, it lists every member but its own signature files,
lists no member twice nor one the wheel lacks, and each listed hash (sha256 or stronger) and
size match the member. Each member is read once, streamed through the bounded reader.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Dict, Iterable, Iterator, Optional, Tuple

from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import check_member_mode, check_member_name
from cosyinstall.streams import CHUNK
from cosyinstall.zipcheck import CheckedInfo, CheckedZip, check_zip
from cosyinstall.zipread import ZIP_ERRORS

__all__ = ["check_wheel", "check_wheels", "CHECK_VERSION", "RECORD_LIMIT"]

# Bumped whenever a rule here or in cosyinstall.zipcheck changes, so remembered verdicts expire.
CHECK_VERSION = "1"

# The largest RECORD among the real set (torch's) is under 2 MB; anything far beyond is hostile.
RECORD_LIMIT = 64 * 1024 * 1024
# Weaker hashes (md5, sha1) are refused by the wheel format itself.
_HASHES = ("sha256", "sha384", "sha512")
_UNLISTED = ("RECORD", "RECORD.jws", "RECORD.p7s")


def check_wheels(wheels: Iterable[Tuple[Path, str]], memo: Optional[Path] = None, workers: Optional[int] = None) -> None:
    """Check each (wheel, sha256); the first bad one raises.

    Wheels are checked in parallel (zlib and hashlib release the GIL). With `memo` (a folder in
    the content-addressed cache), a sha256 that passed once is not read again: the packed bytes
    are verified against that sha256 while the artifact is written.
    """
    folder = memo / CHECK_VERSION if memo is not None else None
    todo = [(Path(p), h) for p, h in wheels if folder is None or not (folder / h).is_file()]

    def one(item: Tuple[Path, str]) -> None:
        check_wheel(item[0])
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / item[1]).touch()

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        for _ in pool.map(one, todo):
            pass


def check_wheel(path: Path) -> None:
    """Raise ArtifactRejected naming the wheel (and the member) unless the wheel is sound."""
    wheel = Path(path)
    label = wheel.name
    with check_zip(str(wheel)) as archive:
        files = _members(archive, label)
        record = _record_member(files, label)
        try:
            listed = _read_record(archive, record, label)
        except ZIP_ERRORS as exc:
            raise ArtifactRejected("%s: member %s is corrupt (%s)" % (label, record.filename, exc)) from None
        for name in files:
            if name not in listed and not _unlisted_ok(name, record.filename):
                raise ArtifactRejected("%s: member %s is not listed in %s" % (label, name, record.filename))
        for name in listed:
            if name not in files:
                raise ArtifactRejected("%s: %s lists %s, which the wheel does not hold" % (label, record.filename, name))
        for name, (algorithm, digest, size) in listed.items():
            if algorithm is not None:
                try:
                    _check_member(archive, files[name], algorithm, digest, size, label)
                except ZIP_ERRORS as exc:
                    raise ArtifactRejected("%s: member %s is corrupt (%s)" % (label, name, exc)) from None


def _members(archive: CheckedZip, label: str) -> Dict[str, CheckedInfo]:
    files: Dict[str, CheckedInfo] = {}
    for info in archive.infolist():
        name = info.filename
        if name.endswith("/"):
            check_member_name(name.rstrip("/"), label)
            check_member_mode(name, info.external_attr, label, directory=True)
            continue
        check_member_name(name, label)
        check_member_mode(name, info.external_attr, label)
        if name in files:
            raise ArtifactRejected("%s holds the member %s twice" % (label, name))
        files[name] = info
    return files


def _record_member(files: Dict[str, CheckedInfo], label: str) -> CheckedInfo:
    records = [i for n, i in files.items() if n.count("/") == 1 and n.split("/")[0].endswith(".dist-info")
               and n.endswith("/RECORD")]
    if len(records) != 1:
        raise ArtifactRejected("%s holds %s" % (label, "no .dist-info/RECORD" if not records else
                                               "%d .dist-info/RECORD files" % len(records)))
    if records[0].file_size > RECORD_LIMIT:
        raise ArtifactRejected("%s: member %s is implausibly large (%d bytes)" % (label, records[0].filename,
                                                                                  records[0].file_size))
    return records[0]


def _unlisted_ok(name: str, record: str) -> bool:
    folder = record.rsplit("/", 1)[0]
    return any(name == "%s/%s" % (folder, own) for own in _UNLISTED)


def _read_record(archive: CheckedZip, record: CheckedInfo, label: str
                 ) -> Dict[str, Tuple[Optional[str], Optional[str], Optional[int]]]:
    """path -> (algorithm, urlsafe-base64 digest, size); RECORD itself and its signatures carry none."""
    listed: Dict[str, Tuple[Optional[str], Optional[str], Optional[int]]] = {}
    with archive.open(record) as raw:
        try:
            for number, row in enumerate(csv.reader(_lines(raw)), 1):
                if not row:
                    continue
                if len(row) != 3:
                    raise ArtifactRejected("%s: %s line %d does not have 3 fields" % (label, record.filename, number))
                name, hashed, size = row
                if name in listed:
                    raise ArtifactRejected("%s: %s lists %s twice" % (label, record.filename, name))
                if not hashed:
                    if not _unlisted_ok(name, record.filename):
                        raise ArtifactRejected("%s: %s gives no hash for %s" % (label, record.filename, name))
                    listed[name] = (None, None, None)
                    continue
                algorithm, _, digest = hashed.partition("=")
                if algorithm not in _HASHES or not digest:
                    raise ArtifactRejected("%s: %s gives %s a %s hash; sha256 or stronger is required"
                                           % (label, record.filename, name, algorithm or "malformed"))
                if size and not size.isdigit():
                    raise ArtifactRejected("%s: %s gives %s the size %r" % (label, record.filename, name, size[:40]))
                listed[name] = (algorithm, digest, int(size) if size else None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ArtifactRejected("%s: %s is not a readable CSV file (%s)" % (label, record.filename, exc)) from None
    return listed


def _lines(raw: IO[bytes]) -> Iterator[str]:
    """The stream's UTF-8 lines, read in chunks (csv wants lines; the member is a byte stream)."""
    rest = b""
    while True:
        chunk = raw.read(CHUNK)
        if not chunk:
            break
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            yield line.decode("utf-8") + "\n"
    if rest:
        yield rest.decode("utf-8")


def _check_member(archive: CheckedZip, info: CheckedInfo, algorithm: str, digest: Optional[str],
                  size: Optional[int], label: str) -> None:
    if size is not None and size != info.file_size:
        raise ArtifactRejected("%s: member %s is %d bytes but RECORD says %d" % (label, info.filename, info.file_size, size))
    hasher = hashlib.new(algorithm)
    with archive.open(info) as src:
        while True:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            hasher.update(chunk)
    actual = base64.urlsafe_b64encode(hasher.digest()).rstrip(b"=").decode("ascii")
    if actual != (digest or "").rstrip("="):
        raise ArtifactRejected("%s: member %s does not match its %s in RECORD" % (label, info.filename, algorithm))

