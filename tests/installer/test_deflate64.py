"""Deflate64 (zip method 9): the pure-Python decoder, and members read through unzip or it."""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import List

import pytest

from cosyinstall.inflate64 import Deflate64Error, Deflate64Reader
from cosyinstall.zipraw import open_member

needs_7z = pytest.mark.skipif(shutil.which("7z") is None,
                              reason="7z (Debian p7zip-full, installed by .ci/run) is needed to write real Deflate64 zips")


class _Bits:
    """LSB-first bit writer for hand-made fixed-Huffman Deflate64 blocks."""

    def __init__(self) -> None:
        self.value = 0
        self.count = 0

    def put(self, value: int, n: int) -> None:
        self.value |= value << self.count
        self.count += n

    def code(self, code: int, n: int) -> None:
        # Huffman codes go in most-significant bit first.
        self.put(int(format(code, "0%db" % n)[::-1], 2), n)

    def lit(self, sym: int) -> None:
        if sym < 144:
            self.code(0x30 + sym, 8)
        elif sym < 256:
            self.code(0x190 + sym - 144, 9)
        elif sym < 280:
            self.code(sym - 256, 7)
        else:
            self.code(0xC0 + sym - 280, 8)

    def bytes(self) -> bytes:
        return self.value.to_bytes((self.count + 7) // 8, "little")


def _decode(raw: bytes, piece: int = 7) -> bytes:
    chunks = [raw[i:i + piece] for i in range(0, len(raw), piece)]
    it = iter(chunks)
    reader = Deflate64Reader(lambda: next(it, b""))
    out = []
    while True:
        data = reader.read(10000)
        if not data:
            return b"".join(out)
        out.append(data)


def _stream_with_deflate64_codes() -> tuple:
    """'abc', a 65538-byte match (length code 285 + 16 bits), 50000 filler, a match 50000 back."""
    rng = random.Random(5)
    filler = bytes(rng.randrange(256) for _ in range(50000))
    w = _Bits()
    w.put(1, 1)  # final block
    w.put(1, 2)  # fixed Huffman codes
    for ch in b"abc":
        w.lit(ch)
    w.lit(285)  # Deflate64: length 3 + 16 extra bits (plain Deflate would mean 258)
    w.put(65538 - 3, 16)
    w.code(2, 5)  # distance code 2: distance 3
    expected = b"abc" + (b"abc" * 30000)[:65538]
    for ch in filler:
        w.lit(ch)
    expected += filler
    w.lit(257 + 7)  # length code 264: length 10
    w.code(31, 5)  # distance code 31: 49153 + 14 extra bits, beyond Deflate's 32 KiB
    w.put(50000 - 49153, 14)
    start = len(expected) - 50000
    expected += expected[start:start + 10]
    w.lit(256)
    return w.bytes(), expected


def test_length_code_285_and_distance_codes_30_31_follow_deflate64() -> None:
    raw, expected = _stream_with_deflate64_codes()
    assert _decode(raw) == expected
    assert _decode(raw, piece=1 << 20) == expected


def test_truncated_stream_is_an_error_not_short_output() -> None:
    raw, _ = _stream_with_deflate64_codes()
    with pytest.raises(Deflate64Error):
        _decode(raw[: len(raw) // 2])


def test_distance_before_the_start_is_an_error() -> None:
    w = _Bits()
    w.put(1, 1)
    w.put(1, 2)
    w.lit(ord("x"))
    w.lit(257)  # length 3
    w.code(4, 5)  # distance 5, but only 1 byte exists
    w.lit(256)
    with pytest.raises(Deflate64Error):
        _decode(w.bytes())


def test_block_type_3_is_an_error() -> None:
    with pytest.raises(Deflate64Error):
        _decode(bytes([0b111]))


def _samples(folder: Path) -> List[Path]:
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    text = " ".join(rng.choice(words) for _ in range(120000)).encode()
    block = os.urandom(50000)
    files = {
        "text.txt": text,
        "zeros.bin": b"\0" * 3000000,  # long matches: length code 285
        "far.bin": block + b"!" + block + block[:40000] * 3,  # matches more than 32 KiB back
        "mixed.bin": text[:200000] + os.urandom(150000) + text[:200000],  # stored blocks inside
        "nibbles.bin": bytes(rng.getrandbits(4) for _ in range(300000)),  # literal-heavy
        "small.txt": b"hello hello hello\n",
    }
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


@needs_7z
@pytest.mark.parametrize("prefer_unzip", [False, True], ids=["pure-python", "system-unzip"])
def test_members_written_by_7z_read_back_exactly(tmp_path: Path, prefer_unzip: bool) -> None:
    if prefer_unzip and shutil.which("unzip") is None:
        pytest.skip("unzip is not installed, so only the pure-Python decoder can be used here")
    src = tmp_path / "src"
    src.mkdir()
    paths = _samples(src)
    archive = tmp_path / "x.zip"
    subprocess.run(["7z", "a", "-tzip", "-mm=Deflate64", str(archive)] + [p.name for p in paths],
                   cwd=src, check=True, stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(archive) as z:
        methods = {i.filename: i.compress_type for i in z.infolist()}
        assert methods["text.txt"] == 9 and methods["zeros.bin"] == 9
        for info in z.infolist():
            stream = open_member(z, info, str(archive), prefer_unzip=prefer_unzip)
            try:
                data = b"".join(iter(functools.partial(stream.read, 1 << 16), b""))
            finally:
                stream.close()
            assert data == (src / info.filename).read_bytes(), info.filename


@needs_7z
@pytest.mark.parametrize("prefer_unzip", [False, True], ids=["pure-python", "system-unzip"])
def test_a_wrong_crc_is_caught_on_either_path(tmp_path: Path, prefer_unzip: bool) -> None:
    if prefer_unzip and shutil.which("unzip") is None:
        pytest.skip("unzip is not installed, so only the pure-Python decoder can be used here")
    (tmp_path / "t.txt").write_bytes(b"the same words again and again " * 5000)
    archive = tmp_path / "x.zip"
    subprocess.run(["7z", "a", "-tzip", "-mm=Deflate64", str(archive), "t.txt"], cwd=tmp_path, check=True,
                   stdout=subprocess.DEVNULL)
    with zipfile.ZipFile(archive) as z:
        crc = z.getinfo("t.txt").CRC
    data = archive.read_bytes()
    good = crc.to_bytes(4, "little")
    archive.write_bytes(data.replace(good, (crc ^ 1).to_bytes(4, "little")))
    with zipfile.ZipFile(archive) as z:
        stream = open_member(z, z.getinfo("t.txt"), str(archive), prefer_unzip=prefer_unzip)
        with pytest.raises(zipfile.BadZipFile):
            try:
                while stream.read(1 << 16):
                    pass
            finally:
                stream.close()
