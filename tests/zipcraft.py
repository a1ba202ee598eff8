"""A builder of raw zip bytes (struct-packed), to craft the hostile zips the tests feed the installer.

`Member` describes one entry; `build` lays members out in order (with optional bytes before,
between and after them) and writes the central directory and end record(s). Every field a
hostile zip may lie about can be set separately for the local header and the directory.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional

LOCAL = struct.Struct("<4s2B4H3I2H")
CENTRAL = struct.Struct("<4s4B4H3I5H2I")
EOCD = struct.Struct("<4s4H2IH")
EOCD64 = struct.Struct("<4sQ2H2I4Q")
LOCATOR = struct.Struct("<4sIQI")
UTF8 = 0x800


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@dataclass
class Member:
    """One entry. `payload` is the uncompressed data; `raw` overrides the bytes stored after the header."""

    name: bytes
    payload: bytes = b""
    method: int = 8
    flags: int = UTF8
    raw: Optional[bytes] = None
    mode: int = 0o100644
    local: Dict[str, object] = field(default_factory=dict)     # overrides: name, method, flags, crc, csize, usize, extra
    central: Dict[str, object] = field(default_factory=dict)   # overrides: the same plus offset, extra, comment
    descriptor: Optional[bytes] = None                          # written after the data (set flag 8 yourself)
    before: bytes = b""                                         # bytes written before this member's local header

    def data(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return deflate(self.payload) if self.method == 8 else self.payload

    def crc(self) -> int:
        return zlib.crc32(self.payload) & 0xFFFFFFFF


def local_header(name: bytes, method: int, flags: int, crc: int, csize: int, usize: int, extra: bytes = b"") -> bytes:
    return LOCAL.pack(b"PK\x03\x04", 20, 0, flags, method, 0, 0x21, crc, csize, usize, len(name), len(extra)) + name + extra


def central_record(name: bytes, method: int, flags: int, crc: int, csize: int, usize: int, offset: int,
                   extra: bytes = b"", comment: bytes = b"", mode: int = 0o100644) -> bytes:
    return CENTRAL.pack(b"PK\x01\x02", 20, 3, 20, 0, flags, method, 0, 0x21, crc, csize, usize, len(name),
                        len(extra), len(comment), 0, 0, mode << 16, offset) + name + extra + comment


def end_record(count: int, cd_size: int, cd_offset: int, comment: bytes = b"", comment_len: Optional[int] = None) -> bytes:
    length = len(comment) if comment_len is None else comment_len
    return EOCD.pack(b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, length) + comment


def zip64_end(count: int, cd_size: int, cd_offset: int, at: int, locator_offset: Optional[int] = None) -> bytes:
    record = EOCD64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    return record + LOCATOR.pack(b"PK\x06\x07", 0, at if locator_offset is None else locator_offset, 1)


def build(members: List[Member], after: bytes = b"", comment: bytes = b"", trailer: bytes = b"",
          zip64: bool = False, eocd: Optional[Dict[str, int]] = None, zip64_fields: Optional[Dict[str, int]] = None,
          extra_records: bytes = b"") -> bytes:
    """The zip's bytes. `after` goes between the last member and the directory, `trailer` after the end record.

    `eocd` overrides the classic end record's count/cd_size/cd_offset/comment_len; `zip64` adds
    the ZIP64 end record and locator (`zip64_fields`: count, cd_size, cd_offset, locator).
    """
    out = bytearray()
    offsets = []
    for m in members:
        out += m.before
        offsets.append(len(out))
        data = m.data()
        lo = m.local
        out += local_header(lo.get("name", m.name), lo.get("method", m.method), lo.get("flags", m.flags),  # type: ignore[arg-type]
                            lo.get("crc", m.crc()), lo.get("csize", len(data)), lo.get("usize", len(m.payload)),  # type: ignore[arg-type]
                            lo.get("extra", b""))  # type: ignore[arg-type]
        out += data
        if m.descriptor is not None:
            out += m.descriptor
    out += after
    cd_offset = len(out)
    for m, offset in zip(members, offsets, strict=True):
        data = m.data()
        ce = m.central
        out += central_record(ce.get("name", m.name), ce.get("method", m.method), ce.get("flags", m.flags),  # type: ignore[arg-type]
                              ce.get("crc", m.crc()), ce.get("csize", len(data)), ce.get("usize", len(m.payload)),  # type: ignore[arg-type]
                              ce.get("offset", offset), ce.get("extra", b""), ce.get("comment", b""), m.mode)  # type: ignore[arg-type]
    out += extra_records
    cd_size = len(out) - cd_offset
    count = len(members)
    over = dict(eocd or {})
    if zip64:
        z = dict(zip64_fields or {})
        at = len(out)
        out += zip64_end(z.get("count", count), z.get("cd_size", cd_size), z.get("cd_offset", cd_offset), at,
                         z.get("locator"))
    out += end_record(over.get("count", count), over.get("cd_size", cd_size), over.get("cd_offset", cd_offset),
                      comment, over.get("comment_len"))
    out += trailer
    return bytes(out)


def many_empty(count: int, declared: Optional[int] = None) -> bytes:
    """`count` empty stored members named f0000000..; the end record may declare another count."""
    out = bytearray()
    central = bytearray()
    for i in range(count):
        name = b"f%07d" % i
        offset = len(out)
        out += local_header(name, 0, 0, 0, 0, 0)
        central += central_record(name, 0, 0, 0, 0, 0, offset)
    cd_offset = len(out)
    out += central
    n = count if declared is None else declared
    if n > 0xFFFF:
        at = len(out)
        out += zip64_end(n, len(central), cd_offset, at)
        out += end_record(0xFFFF, len(central), cd_offset)
    else:
        out += end_record(n, len(central), cd_offset)
    return bytes(out)


def quoted_overlap_bomb(files: int, kernel_size: int) -> bytes:
    """Fifield's quoted-overlap zip bomb, small: every member's deflate data quotes the next local
    header with a stored block and ends in one shared kernel, so each member expands to the
    kernel plus every later header, while the file holds the kernel once.
    """
    kernel = deflate(b"\0" * kernel_size)
    names = [b"%c.bin" % (ord("A") + i) for i in range(files)]
    header_len = [LOCAL.size + len(n) for n in names]
    # Sizes, from the last member backwards: the last holds the kernel alone.
    csizes = [0] * files
    usizes = [0] * files
    crcs = [0] * files
    csizes[-1], usizes[-1], crcs[-1] = len(kernel), kernel_size, zlib.crc32(b"\0" * kernel_size) & 0xFFFFFFFF
    for i in range(files - 2, -1, -1):
        quote = 5
        csizes[i] = quote + header_len[i + 1] + csizes[i + 1]
        usizes[i] = header_len[i + 1] + usizes[i + 1]
    headers = [b""] * files
    for i in range(files - 1, -1, -1):
        if i < files - 1:
            crcs[i] = zlib.crc32(b"\0" * kernel_size, zlib.crc32(b"".join(headers[i + 1:])) & 0xFFFFFFFF) & 0xFFFFFFFF
        headers[i] = local_header(names[i], 8, 0, crcs[i], csizes[i], usizes[i])
    out = bytearray()
    offsets = []
    for i in range(files):
        offsets.append(len(out))
        out += headers[i]
        if i < files - 1:
            n = header_len[i + 1]
            out += bytes([0]) + struct.pack("<HH", n, n ^ 0xFFFF)  # a non-final stored block quoting the next header
    out += kernel
    cd_offset = len(out)
    for i in range(files):
        out += central_record(names[i], 8, 0, crcs[i], csizes[i], usizes[i], offsets[i])
    out += end_record(files, len(out) - cd_offset, cd_offset)
    return bytes(out)
