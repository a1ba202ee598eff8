"""The glibc floor read from real ELF files of this machine agrees with binutils' readelf."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cosybuild.elfglibc import ElfError, elf_files, glibc_floor_of_file, glibc_floor_of_tree, needed_versions
from support import find_python


def readelf_floor(path: str):
    """What binutils reports: the newest GLIBC_x.y in the file's version-needs section."""
    out = subprocess.run(["readelf", "-V", "-W", path], capture_output=True, text=True, check=True).stdout
    needs = out.split("Version needs section", 1)
    if len(needs) < 2:
        return None
    found = [(int(a), int(b)) for a, b in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", needs[1])]
    return max(found) if found else None


def real_elf_files() -> list:
    files = [os.path.realpath(shutil.which(n) or "") for n in ("ls", "git", "sh", "python3")]
    files.append(os.path.realpath(sys.executable))
    py310 = find_python("3.10")
    if py310:
        lib = Path(py310).resolve().parents[1] / "lib"
        files += [str(p) for p in sorted(lib.glob("libpython3*.so.1.0"))]
        files += [str(p) for p in sorted((lib / "python3.10" / "lib-dynload").glob("_ssl*.so"))]
    return [f for f in dict.fromkeys(files) if f and os.path.isfile(f)]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils' readelf is the reference and is not installed")
@pytest.mark.parametrize("path", real_elf_files())
def test_floor_matches_readelf(path: str) -> None:
    assert glibc_floor_of_file(path) == readelf_floor(path)


def test_floor_of_this_python_is_not_newer_than_this_glibc() -> None:
    """This interpreter runs here, so its floor is at most the running glibc."""
    floor = glibc_floor_of_file(os.path.realpath(sys.executable))
    running = tuple(int(x) for x in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2])
    assert floor is not None and floor <= running


def test_libraries_are_named() -> None:
    with open(os.path.realpath(shutil.which("ls")), "rb") as f:
        libs = {lib for lib, _v in needed_versions(f)}
    assert "libc.so.6" in libs


def test_not_elf_and_truncated(tmp_path: Path) -> None:
    text = tmp_path / "script.sh"
    text.write_text("#!/bin/sh\necho hi\n")
    assert glibc_floor_of_file(str(text)) is None
    src = os.path.realpath(shutil.which("ls"))
    cut = tmp_path / "cut"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(64))
    with pytest.raises(ElfError):
        glibc_floor_of_file(str(cut))


def test_tree_floor_is_the_highest_and_skips_links(tmp_path: Path) -> None:
    files = real_elf_files()
    for i, src in enumerate(files):
        shutil.copy(src, tmp_path / ("f%d" % i))
    (tmp_path / "notes.txt").write_text("not elf")
    os.symlink("/nonexistent", tmp_path / "dangling")
    assert len(list(elf_files(str(tmp_path)))) == len(files)
    assert glibc_floor_of_tree(str(tmp_path)) == max(readelf_floor(f) for f in files if readelf_floor(f))
