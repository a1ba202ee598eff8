"""The installer's own structural check of a zip, made when it is opened, whatever Python's patch level.

zipfile trusts the central directory: before the CVE-2024-0450 fix (missing in CPython 3.8.18,
3.11.7 and 3.12.1) members may overlap (a quoted-overlap bomb), and no version compares the
local headers with the directory. This module parses the end record(s) and the central
directory itself with struct (bounded reads, never the whole file), then walks the local
headers in file order, and refuses the zip unless it has exactly one reading:

- one end record, ending the file; its comment holds no second end-record signature;
- ZIP64 records only where consistent: the locator points at the ZIP64 end record just
  before it (no extensible data), each classic field equals its ZIP64 value or is saturated,
  and ZIP64 extra fields in the directory hold exactly the saturated fields;
- every local header agrees with its directory record: name bytes, flags, method, CRC-32,
  sizes (through a data descriptor when flag 3 says the header does not carry them);
- members tile the file: the first starts at byte 0 (no prepended data, so no self-extracting
  stubs), each starts where the previous one (with its data descriptor) ends, and the last
  ends where the central directory begins. No overlap, no gap, no hidden local header;
- names decode (UTF-8 when flagged), hold no control character, pass names.py, and an
  Info-ZIP Unicode Path extra cannot name the member differently;
- no encryption, no split archive; only stored and deflate (Deflate64 too, which the
  artifact reader refuses for built artifacts and allows in hand-made zips);
- at most MAX_MEMBERS members and MAX_DIRECTORY_BYTES of central directory, refused from the
  end record before anything is allocated, so memory stays small whatever the zip claims.

Decompression is bounded by the declared sizes when members are read (zipraw.open_member).
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import IO, Dict, List, Optional, Tuple

from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import check_member_name, legacy_name
from cosyinstall.zipraw import METHODS, open_member

__all__ = [
    "CheckedInfo",
    "CheckedZip",
    "MAX_DIRECTORY_BYTES",
    "MAX_MEMBERS",
    "check_zip",
]

# The real bundle holds 172 wheels plus an app tree of a few thousand files; a Hugging Face
# repository is kept under 100,000 files. 200,000 members leave room for several such models in
# one zip while opening and reading them all peaks near 180 MB (about 900 bytes a member with
# the hand-made reader's own records; tests/installer/test_zipcheck.py runs it under a 512 MB
# address-space limit).
MAX_MEMBERS = 200000
# 46 fixed bytes, a name and a few extras a member: 64 MiB is 330 bytes for each of 200,000.
MAX_DIRECTORY_BYTES = 64 * 1024 * 1024
STORED = 0
# Methods zipfile would decompress without an output bound (bzip2, LZMA) get their own word.
_KNOWN = {12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "AES-encrypted"}

_EOCD = struct.Struct("<4s4H2IH")
_EOCD64 = struct.Struct("<4sQ2H2I4Q")
_LOCATOR = struct.Struct("<4sIQI")
_CENTRAL = struct.Struct("<4s4B4H3I5H2I")
_LOCAL = struct.Struct("<4s2B4H3I2H")
_EOCD_SIG = b"PK\x05\x06"
_EOCD64_SIG = b"PK\x06\x06"
_LOCATOR_SIG = b"PK\x06\x07"
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL_SIG = b"PK\x03\x04"
_DESCRIPTOR_SIG = b"PK\x07\x08"
_MAX_COMMENT = 0xFFFF
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_ZIP64_EXTRA = 0x0001
_UNICODE_PATH = 0x7075
# Flags: 0 encrypted, 6 strong encryption, 13 masked directory; 4 and 5 are reserved or patch data.
_REFUSED_FLAGS = (1 << 0) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 13)
_ENCRYPTED = (1 << 0) | (1 << 6) | (1 << 13)
_DESCRIPTOR = 1 << 3
_UTF8 = 1 << 11


class CheckedInfo(zipfile.ZipInfo):
    """A ZipInfo whose local header was checked; knows where its data starts."""

    __slots__ = ("data_offset",)
    data_offset: int


class CheckedZip:
    """What readers use of a zipfile.ZipFile, over a directory that check_zip accepted."""

    def __init__(self, path: str, infos: List[CheckedInfo]) -> None:
        self.filename = path
        self._infos = infos
        self._by_name: Dict[str, CheckedInfo] = {}
        for info in infos:
            self._by_name.setdefault(info.filename, info)

    def infolist(self) -> List[CheckedInfo]:
        return self._infos

    def namelist(self) -> List[str]:
        return [i.filename for i in self._infos]

    def getinfo(self, name: str) -> CheckedInfo:
        return self._by_name[name]

    def open(self, info: zipfile.ZipInfo) -> IO[bytes]:
        """The member's bytes, bounded by its declared size and checked against its CRC-32."""
        return open_member(self, info, self.filename)

    def close(self) -> None:
        """Nothing is held open: each member stream opens the file itself."""

    def __enter__(self) -> "CheckedZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Refuse(Exception):
    """Internal: one reason, turned into a sentence naming the zip (and member) by check_zip."""

    def __init__(self, why: str, member: Optional[str] = None, unreadable: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.member = member
        self.unreadable = unreadable


def check_zip(path: str) -> CheckedZip:
    """Check the zip at `path` as described above; ArtifactRejected (exit 3) names what is wrong."""
    try:
        with open(path, "rb") as directory, open(path, "rb", buffering=0) as headers:
            infos = _check(directory, headers, os.fstat(headers.fileno()).st_size, path)
    except _Refuse as exc:
        if exc.unreadable:
            raise ArtifactRejected(
                "%s is not a readable zip (%s); it is probably truncated or corrupt" % (path, exc.why),
                "upload it again and compare its size with the one in SHA256SUMS",
            ) from None
        if exc.member is not None:
            raise ArtifactRejected("%s: member %s %s" % (path, exc.member, exc.why)) from None
        raise ArtifactRejected("%s is refused: %s" % (path, exc.why)) from None
    return CheckedZip(path, infos)


def _read_at(handle: IO[bytes], offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    return data if data is not None else b""


def _end_records(handle: IO[bytes], size: int) -> Tuple[int, int, int, int]:
    """(member count, directory offset, directory size, directory end) from the end record(s)."""
    tail_len = min(size, _EOCD.size + _MAX_COMMENT)
    tail = _read_at(handle, size - tail_len, tail_len)
    pos = tail.rfind(_EOCD_SIG)
    if pos < 0 or len(tail) - pos < _EOCD.size:
        raise _Refuse("no end of central directory record", unreadable=True)
    eocd_at = size - tail_len + pos
    _sig, disk, cd_disk, count_here, count, cd_size, cd_offset, comment_len = _EOCD.unpack_from(tail, pos)
    follows = len(tail) - pos - _EOCD.size
    if comment_len != follows:
        # rfind took the last signature: a longer comment would hide a second end record, a
        # shorter one leaves bytes after the zip that another reader may take for one.
        raise _Refuse("its end record declares a %d-byte comment but %d bytes follow it" % (comment_len, follows))
    if disk or cd_disk or count_here != count:
        raise _Refuse("it is part of a split (multi-disk) archive")
    directory_end = eocd_at
    locator_at = eocd_at - _LOCATOR.size
    if locator_at >= 0 and _read_at(handle, locator_at, 4) == _LOCATOR_SIG:
        _sig, z_disk, z_offset, disks = _LOCATOR.unpack(_read_at(handle, locator_at, _LOCATOR.size))
        record_at = locator_at - _EOCD64.size
        if z_disk or disks != 1:
            raise _Refuse("its ZIP64 locator names another disk")
        if record_at < 0 or z_offset != record_at:
            raise _Refuse("its ZIP64 locator points at byte %d, not at the ZIP64 end record just before it" % z_offset)
        record = _read_at(handle, record_at, _EOCD64.size)
        (sig, rec_size, _made, _need, z_disk, z_cd_disk, z_here, z_count, z_cd_size, z_cd_offset) = _EOCD64.unpack(record)
        if sig != _EOCD64_SIG or rec_size != _EOCD64.size - 12:
            raise _Refuse("its ZIP64 end record is damaged or carries extensible data")
        if z_disk or z_cd_disk or z_here != z_count:
            raise _Refuse("it is part of a split (multi-disk) archive")
        for classic, wide, full in ((count, z_count, _U16), (cd_size, z_cd_size, _U32), (cd_offset, z_cd_offset, _U32)):
            if classic != wide and classic != full:
                raise _Refuse("its end record and its ZIP64 end record disagree (%d against %d)" % (classic, wide))
        count, cd_size, cd_offset = z_count, z_cd_size, z_cd_offset
        directory_end = record_at
        if _EOCD_SIG in _read_at(handle, record_at, eocd_at - record_at):
            raise _Refuse("its ZIP64 records hold a second end-record signature")
    if count > MAX_MEMBERS:
        raise _Refuse("it declares %d members, more than the %d cosyinstall accepts" % (count, MAX_MEMBERS))
    if cd_size > MAX_DIRECTORY_BYTES:
        raise _Refuse("its central directory is %d bytes, more than the %d cosyinstall accepts"
                      % (cd_size, MAX_DIRECTORY_BYTES))
    if cd_offset + cd_size != directory_end:
        raise _Refuse("its central directory (%d bytes at byte %d) does not end where its end record begins (byte %d)"
                      % (cd_size, cd_offset, directory_end))
    return count, cd_offset, cd_size, directory_end


def _extras(extra: bytes, member: str, where: str) -> Dict[int, bytes]:
    """Extra-field blocks by id; a block that runs past the field or comes twice is refused."""
    blocks: Dict[int, bytes] = {}
    at = 0
    while at < len(extra):
        if at + 4 > len(extra):
            raise _Refuse("has a damaged extra field in its %s" % where, member)
        kind, length = struct.unpack_from("<2H", extra, at)
        if at + 4 + length > len(extra):
            raise _Refuse("has a damaged extra field 0x%04x in its %s" % (kind, where), member)
        if kind in blocks:
            raise _Refuse("has the extra field 0x%04x twice in its %s" % (kind, where), member)
        blocks[kind] = extra[at + 4:at + 4 + length]
        at += 4 + length
    return blocks


def _zip64_values(block: Optional[bytes], fields: List[Tuple[int, int]], member: str, where: str,
                  exact: bool) -> List[int]:
    """Replace saturated fields (value, width) by their ZIP64 extra values, in the fixed order.

    In the directory (`exact`) the extra holds exactly the saturated fields, as the format
    says; a local header may carry both sizes even when they fit (zipfile does so for members
    near 2 GiB), and they must then equal the header's own values.
    """
    saturated = [value == (_U16 if width == 2 else _U32) for value, width in fields]
    if block is None:
        if any(saturated):
            raise _Refuse("declares ZIP64 sizes in its %s but has no ZIP64 extra field" % where, member)
        return [value for value, _ in fields]
    values = []
    at = 0
    for (value, width), full in zip(fields, saturated):
        size = 8 if width == 4 else 4
        if full or (not exact and at + size <= len(block)):
            if at + size > len(block):
                raise _Refuse("has a ZIP64 extra field too short for its %s" % where, member)
            wide = struct.unpack_from("<Q" if size == 8 else "<I", block, at)[0]
            at += size
            if not full and wide != value:
                raise _Refuse("has a ZIP64 extra field that contradicts its %s" % where, member)
            values.append(wide)
        else:
            values.append(value)
    if at != len(block) or (exact and not any(saturated)):
        raise _Refuse("has a ZIP64 extra field that does not match the fields its %s saturates" % where, member)
    return values


def _name(raw: bytes, flags: int, index: int) -> str:
    if any(b < 32 or b == 127 for b in raw):
        shown = raw.decode("utf-8", "backslashreplace")
        raise _Refuse("has a %s in its name" % ("NUL byte" if 0 in raw else "control character"), repr(shown))
    try:
        return raw.decode("utf-8" if flags & _UTF8 else "cp437")
    except UnicodeDecodeError:
        raise _Refuse("is flagged UTF-8 but its name is not", "#%d (%r)" % (index, raw)) from None


def _method_word(method: int) -> str:
    return "%d (%s)" % (method, _KNOWN[method]) if method in _KNOWN else "%d" % method


def _directory(handle: IO[bytes], count: int, cd_offset: int, cd_size: int, where: str) -> List[CheckedInfo]:
    """Parse the central directory sequentially (a buffered stream), record by record."""
    handle.seek(cd_offset)
    infos: List[CheckedInfo] = []
    used = 0
    for index in range(count):
        if used + _CENTRAL.size > cd_size:
            raise _Refuse("its central directory holds fewer records than the %d its end record declares" % count)
        fixed = handle.read(_CENTRAL.size)
        if len(fixed) != _CENTRAL.size or fixed[:4] != _CENTRAL_SIG:
            raise _Refuse("its central directory is damaged at record %d" % (index + 1))
        (_sig, made_version, made_system, need_version, _need_system, flags, method, dostime, dosdate, crc,
         csize, usize, name_len, extra_len, comment_len, disk, internal, external, offset) = _CENTRAL.unpack(fixed)
        used += _CENTRAL.size + name_len + extra_len + comment_len
        if used > cd_size:
            raise _Refuse("its central directory record %d runs past the directory's end" % (index + 1))
        raw = handle.read(name_len)
        extra = handle.read(extra_len)
        handle.seek(comment_len, 1)  # a member comment is not kept: nothing uses it
        name = _name(raw, flags, index + 1)
        if flags & _ENCRYPTED:
            raise _Refuse("is encrypted", name)
        if method not in METHODS:
            raise _Refuse("uses compression method %s, which cosyinstall cannot read; zip it again with Deflate (the "
                          "default of most tools)" % _method_word(method), name)
        if flags & _REFUSED_FLAGS:
            raise _Refuse("has reserved flag bits set (0x%04x)" % flags, name)
        if disk:
            raise _Refuse("lies on another disk of a split archive", name)
        blocks = _extras(extra, name, "central directory record")
        usize, csize, offset, disk_wide = _zip64_values(
            blocks.get(_ZIP64_EXTRA), [(usize, 4), (csize, 4), (offset, 4), (disk, 2)], name,
            "central directory record", exact=True)
        if disk_wide:
            raise _Refuse("lies on another disk of a split archive", name)
        info = CheckedInfo(name)
        info.date_time = ((dosdate >> 9) + 1980, (dosdate >> 5) & 0xF, dosdate & 0x1F,
                          dostime >> 11, (dostime >> 5) & 0x3F, (dostime & 0x1F) * 2)
        info.create_version, info.create_system, info.extract_version = made_version, made_system, need_version
        info.flag_bits, info.compress_type, info.CRC = flags, method, crc
        info.compress_size, info.file_size, info.header_offset = csize, usize, offset
        info.internal_attr, info.external_attr, info.volume = internal, external, 0
        info.extra, info.comment = b"", b""
        _check_name(info, blocks.get(_UNICODE_PATH), where)
        if method == STORED and csize != usize:
            raise _Refuse("is stored but declares %d compressed and %d uncompressed bytes" % (csize, usize), name)
        if name.endswith("/") and usize:
            raise _Refuse("is a folder entry holding %d bytes" % usize, name)
        infos.append(info)
    if used != cd_size:
        raise _Refuse("its central directory holds %d bytes beyond its %d declared records" % (cd_size - used, count))
    return infos


def _check_name(info: CheckedInfo, unicode_path: Optional[bytes], where: str) -> None:
    """The name as a reader will take it passes names.py; an Info-ZIP Unicode Path cannot differ."""
    name = legacy_name(info)
    check_member_name(name.rstrip("/") if name.endswith("/") else name, where)
    if unicode_path is not None:
        # Version 1, CRC-32 of the stored name, then the UTF-8 name some unzip tools prefer.
        other = unicode_path[5:].decode("utf-8", "replace") if len(unicode_path) > 5 else ""
        if other.replace("\\", "/") != name:
            raise _Refuse("carries a second name %r in an Info-ZIP Unicode Path field" % other, repr(name))


def _tile(handle: IO[bytes], infos: List[CheckedInfo], cd_offset: int) -> None:
    """Walk the local headers in file order: each agrees with the directory, and they tile the file."""
    ordered = sorted(range(len(infos)), key=lambda i: infos[i].header_offset)
    expected = 0
    previous: Optional[str] = None
    for position, index in enumerate(ordered):
        info = infos[index]
        name = info.filename
        start = info.header_offset
        if start < expected:
            what = "member %s" % previous if previous is not None else "the start of the file"
            raise _Refuse("overlaps %s (its local header at byte %d lies inside it)" % (what, start), name)
        if start > expected:
            if previous is None:
                raise _Refuse("it has %d bytes before its first member (prepended data, as in a self-extracting "
                              "archive)" % start)
            raise _Refuse("is preceded by %d bytes that belong to no member" % (start - expected), name)
        if start + _LOCAL.size > cd_offset:
            raise _Refuse("has its local header inside the central directory", name)
        fixed = _read_at(handle, start, _LOCAL.size)
        (sig, _need, _system, flags, method, _time, _date, crc, csize, usize, name_len, extra_len) = _LOCAL.unpack(fixed)
        if sig != _LOCAL_SIG:
            raise _Refuse("has no local header at byte %d" % start, name)
        variable = _read_at(handle, start + _LOCAL.size, name_len + extra_len)
        if len(variable) != name_len + extra_len:
            raise _Refuse("has a local header cut short", name)
        raw = variable[:name_len]
        stored_raw = info.orig_filename.encode("utf-8" if info.flag_bits & _UTF8 else "cp437")
        if raw != stored_raw:
            raise _Refuse("is named %r in its local header" % raw.decode("utf-8", "backslashreplace"), name)
        if flags != info.flag_bits:
            raise _Refuse("has flags 0x%04x in its local header but 0x%04x in the central directory"
                          % (flags, info.flag_bits), name)
        if method != info.compress_type:
            raise _Refuse("uses method %s in its local header but %d in the central directory"
                          % (_method_word(method), info.compress_type), name)
        blocks = _extras(variable[name_len:], name, "local header")
        usize, csize = _zip64_values(blocks.get(_ZIP64_EXTRA), [(usize, 4), (csize, 4)], name, "local header",
                                     exact=False)
        data_offset = start + _LOCAL.size + name_len + extra_len
        data_end = data_offset + info.compress_size
        if data_end > cd_offset:
            raise _Refuse("has data running into the central directory", name)
        following = infos[ordered[position + 1]].header_offset if position + 1 < len(ordered) else cd_offset
        if flags & _DESCRIPTOR:
            for label, local, central in (("CRC-32", crc, info.CRC), ("compressed size", csize, info.compress_size),
                                          ("size", usize, info.file_size)):
                if local and local != central:
                    raise _Refuse("has %s %d in its local header but %d in the central directory"
                                  % (label, local, central), name)
            end = data_end + _descriptor(handle, info, data_end, following - data_end)
        else:
            for label, local, central in (("CRC-32", crc, info.CRC), ("compressed size", csize, info.compress_size),
                                          ("size", usize, info.file_size)):
                if local != central:
                    raise _Refuse("has %s %d in its local header but %d in the central directory"
                                  % (label, local, central), name)
            end = data_end
        info.data_offset = data_offset
        expected = end
        previous = name
    if expected > cd_offset:
        raise _Refuse("overlaps the central directory", previous)
    if expected < cd_offset:
        raise _Refuse("it has %d bytes between its last member and its central directory that belong to no member"
                      % (cd_offset - expected))


def _descriptor(handle: IO[bytes], info: CheckedInfo, at: int, room: int) -> int:
    """Length of the data descriptor at `at`; its values must equal the directory's.

    Its four forms differ in length (signature or not, 32- or 64-bit sizes), and the next
    member starts right after it, so the room before that start says which form it is.
    """
    forms = {12: (False, "<3I"), 16: (True, "<3I"), 20: (False, "<IQQ"), 24: (True, "<IQQ")}
    if room not in forms:
        raise _Refuse("is followed by %d bytes where its data descriptor should be" % max(room, 0), info.filename)
    signed, layout = forms[room]
    data = _read_at(handle, at, room)
    if signed and data[:4] != _DESCRIPTOR_SIG:
        raise _Refuse("has a damaged data descriptor", info.filename)
    crc, csize, usize = struct.unpack_from(layout, data, 4 if signed else 0)
    if (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size):
        raise _Refuse("has a data descriptor (CRC-32 %d, %d and %d bytes) that contradicts the central directory"
                      % (crc, csize, usize), info.filename)
    return room


def _check(directory: IO[bytes], headers: IO[bytes], size: int, where: str) -> List[CheckedInfo]:
    count, cd_offset, cd_size, _end = _end_records(headers, size)
    infos = _directory(directory, count, cd_offset, cd_size, where)
    _tile(headers, infos, cd_offset)
    return infos

