"""Deflate64 (zip method 9) decoder: streaming, pure Python, for zips zipfile cannot read.

Deflate64 is Deflate with a 64 KiB window: distance codes 30 and 31 (14 extra bits) reach
65536 bytes back, and length code 285 means 3 plus a 16-bit extra instead of a fixed 258.
Windows Explorer writes it for large files. Output is produced in pieces as it is read,
so memory stays bounded whatever the member's size.
"""

from __future__ import annotations

import zipfile
from typing import Callable, Generator, List, Tuple

__all__ = ["Deflate64Error", "Deflate64Reader", "inflate64"]

WINDOW = 65536
# Output is handed out once this much beyond the window has accumulated.
_FLUSH = 4 * WINDOW
_LIMIT = _FLUSH + WINDOW

_LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
             131, 163, 195, 227, 3]
_LEN_EXTRA = [0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [16]
_DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
              2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577, 32769, 49153]
_DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
               13, 13, 14, 14]
_CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
# Reading zero bits past the end of the input this many times means the data is cut short.
_MAX_PAD_BITS = 256


class Deflate64Error(zipfile.BadZipFile):
    """The compressed data is not valid Deflate64 (or is cut short)."""


def _table(lengths: List[int]) -> Tuple[List[int], int]:
    """Lookup table for a canonical Huffman code, indexed by the next `bits` input bits.

    Entries are symbol << 4 | code length, or -1 where no code exists (an incomplete code).
    """
    maxlen = max(lengths) if lengths else 0
    if maxlen == 0:
        return [-1], 0
    counts = [0] * (maxlen + 1)
    for n in lengths:
        counts[n] += 1
    counts[0] = 0
    left = 1
    for n in range(1, maxlen + 1):
        left = (left << 1) - counts[n]
        if left < 0:
            raise Deflate64Error("over-subscribed Huffman code")
    next_code = [0] * (maxlen + 2)
    code = 0
    for n in range(1, maxlen + 1):
        code = (code + counts[n - 1]) << 1
        next_code[n] = code
    size = 1 << maxlen
    table = [-1] * size
    for symbol, n in enumerate(lengths):
        if not n:
            continue
        code = next_code[n]
        next_code[n] += 1
        rev = 0
        for _ in range(n):
            rev = (rev << 1) | (code & 1)
            code >>= 1
        step = 1 << n
        table[rev::step] = [symbol << 4 | n] * ((size - rev - 1) // step + 1)
    return table, maxlen


_FIXED_LIT = _table([8] * 144 + [9] * 112 + [7] * 24 + [8] * 8)
_FIXED_DIST = _table([5] * 32)


class _Bits:
    """LSB-first bit buffer over input pulled from `more()` (b'' at the end)."""

    def __init__(self, more: Callable[[], bytes]) -> None:
        self.more = more
        self.inp = b""
        self.pos = 0
        self.buf = 0
        self.cnt = 0
        self.pad = 0

    def fill(self, need: int) -> None:
        while self.cnt < need:
            if self.pos >= len(self.inp):
                self.inp = self.more()
                self.pos = 0
                if not self.inp:
                    # Past the end: supply zeros, and remember how many so a read that
                    # actually uses them is reported as truncated data.
                    self.cnt += 8
                    self.pad += 8
                    if self.pad > _MAX_PAD_BITS:
                        raise Deflate64Error("compressed data ends too early")
                    continue
            take = self.inp[self.pos:self.pos + 4]
            self.pos += len(take)
            self.buf |= int.from_bytes(take, "little") << self.cnt
            self.cnt += 8 * len(take)

    def take(self, n: int) -> int:
        if self.cnt < n:
            self.fill(n)
        value = self.buf & ((1 << n) - 1)
        self.buf >>= n
        self.cnt -= n
        return value

    def check_not_short(self) -> None:
        if self.pad > self.cnt:
            raise Deflate64Error("compressed data ends too early")


def _stored(bits: _Bits, out: bytearray) -> None:
    bits.take(bits.cnt & 7)
    length = bits.take(16)
    if bits.take(16) != length ^ 0xFFFF:
        raise Deflate64Error("stored block length check failed")
    while length and bits.cnt >= 8:
        out.append(bits.take(8))
        length -= 1
    bits.check_not_short()
    while length:
        if bits.pos >= len(bits.inp):
            bits.inp = bits.more()
            bits.pos = 0
            if not bits.inp:
                raise Deflate64Error("compressed data ends inside a stored block")
        piece = bits.inp[bits.pos:bits.pos + length]
        bits.pos += len(piece)
        out += piece
        length -= len(piece)


def _dynamic_tables(bits: _Bits) -> Tuple[Tuple[List[int], int], Tuple[List[int], int]]:
    hlit = bits.take(5) + 257
    hdist = bits.take(5) + 1
    hclen = bits.take(4) + 4
    if hlit > 286:
        raise Deflate64Error("too many literal/length codes")
    cl_lengths = [0] * 19
    for i in range(hclen):
        cl_lengths[_CL_ORDER[i]] = bits.take(3)
    cl_table, cl_bits = _table(cl_lengths)
    cl_mask = (1 << cl_bits) - 1
    lengths: List[int] = []
    total = hlit + hdist
    while len(lengths) < total:
        bits.fill(cl_bits)
        entry = cl_table[bits.buf & cl_mask]
        if entry < 0:
            raise Deflate64Error("invalid code-length code")
        bits.take(entry & 15)
        symbol = entry >> 4
        if symbol < 16:
            lengths.append(symbol)
        elif symbol == 16:
            if not lengths:
                raise Deflate64Error("repeat with no previous length")
            lengths.extend([lengths[-1]] * (3 + bits.take(2)))
        elif symbol == 17:
            lengths.extend([0] * (3 + bits.take(3)))
        else:
            lengths.extend([0] * (11 + bits.take(7)))
    if len(lengths) > total:
        raise Deflate64Error("code lengths overrun their count")
    lit = lengths[:hlit]
    if lit[256] == 0:
        raise Deflate64Error("block has no end-of-block code")
    return _table(lit), _table(lengths[hlit:])


def _huffman(bits: _Bits, out: bytearray, lit: Tuple[List[int], int], dist: Tuple[List[int], int]) -> None:
    # The hot loop: locals only, and one refill to >= 32 bits before each code, which covers
    # the longest code (15 bits) plus its longest extra (16 bits for length code 285).
    ltab, lbits = lit
    dtab, dbits = dist
    lmask = (1 << lbits) - 1
    dmask = (1 << dbits) - 1
    len_base, len_extra, dist_base, dist_extra = _LEN_BASE, _LEN_EXTRA, _DIST_BASE, _DIST_EXTRA
    buf, cnt = bits.buf, bits.cnt
    while True:
        if cnt < 32:
            bits.buf, bits.cnt = buf, cnt
            bits.fill(32)
            buf, cnt = bits.buf, bits.cnt
        entry = ltab[buf & lmask]
        if entry < 0:
            raise Deflate64Error("invalid literal/length code")
        n = entry & 15
        buf >>= n
        cnt -= n
        symbol = entry >> 4
        if symbol < 256:
            out.append(symbol)
            if len(out) > _LIMIT:
                bits.buf, bits.cnt = buf, cnt
                raise _Flush()
            continue
        if symbol == 256:
            break
        symbol -= 257
        if symbol > 28:
            raise Deflate64Error("invalid length code")
        n = len_extra[symbol]
        length = len_base[symbol] + (buf & ((1 << n) - 1))
        buf >>= n
        cnt -= n
        if cnt < 32:
            bits.buf, bits.cnt = buf, cnt
            bits.fill(32)
            buf, cnt = bits.buf, bits.cnt
        entry = dtab[buf & dmask]
        if entry < 0:
            raise Deflate64Error("invalid distance code")
        n = entry & 15
        buf >>= n
        cnt -= n
        symbol = entry >> 4
        n = dist_extra[symbol]
        distance = dist_base[symbol] + (buf & ((1 << n) - 1))
        buf >>= n
        cnt -= n
        start = len(out) - distance
        if start < 0:
            raise Deflate64Error("distance reaches before the start of the data")
        if length <= distance:
            out += out[start:start + length]
        else:
            # The copy overlaps what it produces: repeat the last `distance` bytes.
            pattern = out[start:]
            out += (pattern * (length // distance + 1))[:length]
        if len(out) > _LIMIT:
            # A block may be any size: hand output out mid-block to keep memory bounded.
            bits.buf, bits.cnt = buf, cnt
            raise _Flush()
    bits.buf, bits.cnt = buf, cnt


class _Flush(Exception):
    """Internal: a block produced enough output to hand some out before it ends."""


class Deflate64Reader:
    """A readable stream of the decompressed data; reads raw input through `more()`."""

    def __init__(self, more: Callable[[], bytes]) -> None:
        self._chunks = inflate64(more)
        self._buf = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._done = True
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> "Deflate64Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def inflate64(more: Callable[[], bytes]) -> Generator[bytes, None, None]:
    """Yield the decompressed data of a raw Deflate64 stream read through `more()`."""
    bits = _Bits(more)
    out = bytearray()
    final = 0
    pending = None  # the tables of a block interrupted by a flush
    while True:
        if pending is None:
            if final:
                break
            final = bits.take(1)
            kind = bits.take(2)
            if kind == 0:
                _stored(bits, out)
                tables = None
            elif kind == 1:
                tables = (_FIXED_LIT, _FIXED_DIST)
            elif kind == 2:
                tables = _dynamic_tables(bits)
            else:
                raise Deflate64Error("invalid block type 3")
        else:
            tables = pending
        pending = None
        if tables is not None:
            try:
                _huffman(bits, out, *tables)
            except _Flush:
                pending = tables
        bits.check_not_short()
        if len(out) > _FLUSH:
            yield bytes(out[:-WINDOW])
            del out[:-WINDOW]
    if out:
        yield bytes(out)
