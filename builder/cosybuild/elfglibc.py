"""The glibc floor of ELF files: the newest GLIBC_x.y symbol version they require.

A dynamically linked ELF file lists, in its `.gnu.version_r` section (SHT_GNU_verneed), every
symbol version it needs from each shared library; the loader refuses to start it when the
box's glibc lacks one. The newest `GLIBC_x.y` there is therefore the oldest glibc it runs on.
Files are read with seek: the ELF header, the section headers, the verneed chain and the
names it points at, never the whole file.
"""

from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO, Iterable, Iterator, List, Optional, Tuple

__all__ = ["ElfError", "needed_versions", "glibc_floor_of_file", "glibc_floor", "elf_files", "glibc_floor_of_tree"]

_MAGIC = b"\x7fELF"
_SHT_GNU_VERNEED = 0x6FFFFFFE
_GLIBC = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.\d+)?$")
_MAX_ENTRIES = 1 << 16  # a corrupt chain must not loop for ever


class ElfError(ValueError):
    """The file starts like ELF but its headers do not hold together."""


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ElfError("truncated at offset %d" % offset)
    return data


def _cstring(f: BinaryIO, offset: int, limit: int = 4096) -> str:
    f.seek(offset)
    out = b""
    while len(out) < limit:
        chunk = f.read(64)
        if not chunk:
            raise ElfError("unterminated string at offset %d" % offset)
        end = chunk.find(b"\0")
        if end >= 0:
            return (out + chunk[:end]).decode("ascii", "replace")
        out += chunk
    raise ElfError("string too long at offset %d" % offset)


def needed_versions(f: BinaryIO) -> List[Tuple[str, str]]:
    """(library, version) pairs of the file's .gnu.version_r; [] for ELF files without one.

    Raises ElfError when `f` is not ELF or its headers are inconsistent.
    """
    ident = _read_at(f, 0, 16)
    if ident[:4] != _MAGIC:
        raise ElfError("not an ELF file")
    is64 = ident[4] == 2
    end = "<" if ident[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack(end + "Q", _read_at(f, 0x28, 8))
        shentsize, shnum = struct.unpack(end + "HH", _read_at(f, 0x3A, 4))
        shdr = end + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack(end + "I", _read_at(f, 0x20, 4))
        shentsize, shnum = struct.unpack(end + "HH", _read_at(f, 0x2E, 4))
        shdr = end + "IIIIIIIIII"
    if shoff == 0 or shnum == 0:
        return []
    if shentsize < struct.calcsize(shdr):
        raise ElfError("section header size %d is too small" % shentsize)
    sections = []
    for i in range(shnum):
        fields = struct.unpack(shdr, _read_at(f, shoff + i * shentsize, struct.calcsize(shdr)))
        # name, type, flags, addr, offset, size, link, info, addralign, entsize
        sections.append((fields[1], fields[4], fields[5], fields[6], fields[7]))
    pairs: List[Tuple[str, str]] = []
    for sh_type, offset, _size, link, count in sections:
        if sh_type != _SHT_GNU_VERNEED:
            continue
        if link >= len(sections):
            raise ElfError("verneed names a string table that does not exist")
        strtab = sections[link][1]
        entry = offset
        for _ in range(min(count, _MAX_ENTRIES)):
            _ver, cnt, vn_file, vn_aux, vn_next = struct.unpack(end + "HHIII", _read_at(f, entry, 16))
            library = _cstring(f, strtab + vn_file)
            aux = entry + vn_aux
            for _ in range(min(cnt, _MAX_ENTRIES)):
                _hash, _flags, _other, name, vna_next = struct.unpack(end + "IHHII", _read_at(f, aux, 16))
                pairs.append((library, _cstring(f, strtab + name)))
                if vna_next == 0:
                    break
                aux += vna_next
            if vn_next == 0:
                break
            entry += vn_next
    return pairs


def _floor(versions: Iterable[str]) -> Optional[Tuple[int, int]]:
    best: Optional[Tuple[int, int]] = None
    for version in versions:
        match = _GLIBC.match(version)
        if match:
            got = (int(match.group(1)), int(match.group(2)))
            if best is None or got > best:
                best = got
    return best


def glibc_floor_of_file(path: str) -> Optional[Tuple[int, int]]:
    """The newest GLIBC_x.y one ELF file needs; None for a non-ELF file or one needing none."""
    with open(path, "rb") as f:
        if f.read(4) != _MAGIC:
            return None
        return _floor(version for _lib, version in needed_versions(f))


def glibc_floor(floors: Iterable[Optional[Tuple[int, int]]]) -> Optional[Tuple[int, int]]:
    """The highest of several floors (None entries ignored)."""
    present = [fl for fl in floors if fl is not None]
    return max(present) if present else None


def elf_files(root: str) -> Iterator[str]:
    """Regular files under root (links not followed) that start with the ELF magic."""
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if f.read(4) == _MAGIC:
                    yield path


def glibc_floor_of_tree(root: str) -> Optional[Tuple[int, int]]:
    """The glibc floor of every ELF file under root: the oldest glibc the whole tree runs on."""
    return glibc_floor(glibc_floor_of_file(p) for p in elf_files(root))
