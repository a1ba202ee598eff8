"""One zip member as a bounded stream: stored, deflate, or Deflate64 (method 9).

The compressed bytes are read from the file directly (never through zipfile, whose checks
depend on the Python patch level), exactly `compress_size` of them from where zipcheck found
the data. Output is bounded by the declared size: a byte more, or the stream ending a byte
short, is damage (zipfile.BadZipFile), as is a deflate stream that ends before its compressed
bytes do, and a CRC-32 that differs. zipfile cannot read Deflate64, which Windows Explorer
writes for large files; such members are read with the system `unzip` when it is there
(fast, C) and with the pure-Python decoder in inflate64.py otherwise.
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
# bzip2 and LZMA are refused: zipfile decompresses them without an output bound.
METHODS = {0: "stored", 8: "deflate", DEFLATE64: "deflate64"}
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


def open_member(archive: object, info: zipfile.ZipInfo, zip_path: str, prefer_unzip: bool = True) -> IO[bytes]:
    """A readable stream of the member's data; damage surfaces as zipfile.BadZipFile.

    `archive` (a zipcheck.CheckedZip, or a zipfile.ZipFile in tests) is not read from: the
    member is found through `info` alone.
    """
    check_readable(info, zip_path)
    unzip = shutil.which("unzip") if prefer_unzip and info.compress_type == DEFLATE64 else None
    if unzip and _unzip_can_name(info):
        inner: IO[bytes] = _UnzipStream(unzip, zip_path, info.orig_filename)  # type: ignore[assignment]
    else:
        raw = _RawMember(zip_path, info)
        if info.compress_type == zipfile.ZIP_STORED:
            inner = raw  # type: ignore[assignment]
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            inner = _Inflated(raw)  # type: ignore[assignment]
        else:
            inner = _Closing(Deflate64Reader(raw.read), raw)  # type: ignore[assignment]
    return _Bounded(inner, info)  # type: ignore[return-value]


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    return info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8 else "cp437")


def _unzip_can_name(info: zipfile.ZipInfo) -> bool:
    """unzip selects members by pattern: use it only for names it cannot misread."""
    name = info.orig_filename
    printable = all(32 <= ord(c) < 127 for c in name)
    return printable and not (_UNZIP_UNSAFE & set(name)) and not name.startswith("-")


class _RawMember:
    """The compressed bytes of one member: exactly compress_size of them, from its data offset."""

    def __init__(self, zip_path: str, info: zipfile.ZipInfo) -> None:
        self.handle = open(zip_path, "rb", buffering=0)
        try:
            offset = getattr(info, "data_offset", None)
            if offset is None:
                offset = self._data_offset(info)
            self.handle.seek(offset)
        except BaseException:
            self.handle.close()
            raise
        self.left = info.compress_size

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """For a ZipInfo zipcheck did not make: step over the local header (its name must agree)."""
        self.handle.seek(info.header_offset)
        header = self.handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
            raise zipfile.BadZipFile("bad local header for %s" % info.filename)
        fields = _LOCAL_HEADER.unpack(header)
        name_len, extra_len = fields[-2], fields[-1]
        if self.handle.read(name_len) != _raw_name(info):
            raise zipfile.BadZipFile("file name in directory and header differ for %s" % info.filename)
        return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len

    def read(self, n: int = _RAW_CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        data = self.handle.read(min(n if n > 0 else _RAW_CHUNK, self.left))
        if not data:
            raise zipfile.BadZipFile("the zip ends inside a member")
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()


class _Inflated:
    """Raw deflate, never more than `n` bytes of output a call; the stream must end with its bytes."""

    def __init__(self, raw: _RawMember) -> None:
        self.raw = raw
        self.inflater = zlib.decompressobj(-15)

    def read(self, n: int) -> bytes:
        while True:
            if self.inflater.eof:
                if self.inflater.unused_data or self.raw.left:
                    raise zipfile.BadZipFile("bytes follow the end of its deflate stream")
                return b""
            data = self.inflater.unconsumed_tail or self.raw.read()
            if not data:
                raise zipfile.BadZipFile("its deflate stream is cut short")
            out = self.inflater.decompress(data, n)
            if out:
                return out

    def close(self) -> None:
        self.raw.close()


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


class _Bounded:
    """Exactly the declared number of bytes, then the CRC-32 of the central directory, or BadZipFile."""

    def __init__(self, inner: IO[bytes], info: zipfile.ZipInfo) -> None:
        self.inner = inner
        self.info = info
        self.crc = 0
        self.out = 0
        self.done = False

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all if n < 0), fewer only at the end, like a file."""
        if n is None or n < 0:
            return b"".join(iter(lambda: self._some(_RAW_CHUNK), b""))
        first = self._some(n)
        if len(first) >= n or not first:
            return first
        parts = [first]
        got = len(first)
        while got < n:
            more = self._some(n - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _some(self, n: int) -> bytes:
        if self.done or n <= 0:
            return b""
        # One byte beyond what is still declared is enough to see a lie, so ask for no more.
        data = self.inner.read(min(n, self.info.file_size - self.out + 1))
        if data:
            self.out += len(data)
            if self.out > self.info.file_size:
                raise zipfile.BadZipFile("%s inflates beyond its declared %d bytes" % (self.info.filename, self.info.file_size))
            self.crc = zlib.crc32(data, self.crc)
            return data
        self.done = True
        if self.out != self.info.file_size:
            raise zipfile.BadZipFile("%s ends after %d of its declared %d bytes" % (self.info.filename, self.out, self.info.file_size))
        if self.crc & 0xFFFFFFFF != self.info.CRC:
            raise zipfile.BadZipFile("Bad CRC-32 for file %r" % self.info.filename)
        return b""

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> "_Bounded":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
