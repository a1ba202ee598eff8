"""One zip member as a stream, whatever its method: zipfile's own, or Deflate64 (method 9).

zipfile cannot read Deflate64, which Windows Explorer writes for large files. Such members
are read with the system `unzip` when it is there (fast, C) and with the pure-Python
decoder in inflate64.py otherwise; either way the CRC-32 is checked at the end.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zipfile
import zlib
from typing import IO, Iterable

from cosyinstall.errors import ArtifactRejected
from cosyinstall.inflate64 import Deflate64Reader

__all__ = ["METHODS", "DEFLATE64", "check_readable", "open_member", "deflate64_bytes"]

DEFLATE64 = 9
METHODS = {0: "stored", 8: "deflate", DEFLATE64: "deflate64", 12: "bzip2", 14: "lzma"}
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
_LOCAL_MAGIC = b"PK\x03\x04"
_ENCRYPTED = 0x1
_UTF8 = 0x800
_RAW_CHUNK = 256 * 1024
# Characters unzip treats as wildcards, or that would make a name look like an option.
_UNZIP_UNSAFE = set("*?[]\\")


def check_readable(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse encrypted members and methods this installer cannot decompress."""
    if info.flag_bits & _ENCRYPTED:
        raise ArtifactRejected("%s: member %s is encrypted" % (where, info.filename), "zip it again without a password")
    if info.compress_type not in METHODS:
        raise ArtifactRejected(
            "%s: member %s uses compression method %d, which cosyinstall cannot read"
            % (where, info.filename, info.compress_type),
            "zip it again with Deflate (the default of most tools)",
        )


def deflate64_bytes(infos: Iterable[zipfile.ZipInfo]) -> int:
    """How many uncompressed bytes are stored with Deflate64."""
    return sum(i.file_size for i in infos if i.compress_type == DEFLATE64)


def open_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, zip_path: str, prefer_unzip: bool = True) -> IO[bytes]:
    """A readable stream of the member's data; damage surfaces as zipfile.BadZipFile."""
    check_readable(info, zip_path)
    if info.compress_type != DEFLATE64:
        return archive.open(info)
    unzip = shutil.which("unzip") if prefer_unzip else None
    if unzip and _unzip_can_name(info):
        inner: IO[bytes] = _UnzipStream(unzip, zip_path, info.orig_filename)  # type: ignore[assignment]
    else:
        raw = _RawMember(zip_path, info)
        inner = _Closing(Deflate64Reader(raw.read), raw)  # type: ignore[assignment]
    return _CrcChecked(inner, info)  # type: ignore[return-value]


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8 else "cp437")


def _unzip_can_name(info: zipfile.ZipInfo) -> bool:
    """unzip selects members by pattern: use it only for names it cannot misread."""
    name = info.orig_filename
    printable = all(32 <= ord(c) < 127 for c in name)
    return printable and not (_UNZIP_UNSAFE & set(name)) and not name.startswith("-")


class _RawMember:
    """The compressed bytes of one member, found through its local header."""

    def __init__(self, zip_path: str, info: zipfile.ZipInfo) -> None:
        self.handle = open(zip_path, "rb")
        try:
            self.handle.seek(info.header_offset)
            header = self.handle.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
                raise zipfile.BadZipFile("bad local header for %s" % info.filename)
            fields = _LOCAL_HEADER.unpack(header)
            name_len, extra_len = fields[-2], fields[-1]
            if self.handle.read(name_len) != _raw_name(info):
                raise zipfile.BadZipFile("file name in directory and header differ for %s" % info.filename)
            self.handle.seek(extra_len, 1)
        except BaseException:
            self.handle.close()
            raise
        self.left = info.compress_size

    def read(self) -> bytes:
        if self.left <= 0:
            return b""
        data = self.handle.read(min(_RAW_CHUNK, self.left))
        if not data:
            raise zipfile.BadZipFile("the zip ends inside a member")
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


class _Closing:
    """Close the raw member along with the decoder."""

    def __init__(self, reader: Deflate64Reader, raw: _RawMember) -> None:
        self.reader = reader
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        return self.reader.read(n)

    def close(self) -> None:
        self.reader.close()
        self.raw.close()


class _UnzipStream:
    """`unzip -p ZIP NAME`: the member's bytes on a pipe, checked by unzip and by us."""

    def __init__(self, unzip: str, zip_path: str, name: str) -> None:
        self.proc = subprocess.Popen(
            [unzip, "-p", "-qq", zip_path, name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.name = name

    def read(self, n: int = -1) -> bytes:
        assert self.proc.stdout is not None
        data = self.proc.stdout.read(n) if n >= 0 else self.proc.stdout.read()
        if not data or n < 0:
            code = self.proc.wait()
            if code not in (0, 1):  # 1 is a warning only (for example an odd extra field)
                raise zipfile.BadZipFile("unzip could not read %s (exit %d)" % (self.name, code))
        return data

    def close(self) -> None:
        if self.proc.poll() is None:
            # Stopped early (a size lie): the rest of the member is not wanted.
            self.proc.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc.wait()


class _CrcChecked:
    """Pass data through and compare its CRC-32 with the central directory at the end."""

    def __init__(self, inner: IO[bytes], info: zipfile.ZipInfo) -> None:
        self.inner = inner
        self.info = info
        self.crc = 0
        self.checked = False

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        if data:
            self.crc = zlib.crc32(data, self.crc)
        elif not self.checked:
            self.checked = True
            if self.crc & 0xFFFFFFFF != self.info.CRC:
                raise zipfile.BadZipFile("Bad CRC-32 for file %r" % self.info.filename)
        return data

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> "_CrcChecked":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
