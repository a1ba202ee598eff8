"""Choosing the venv's CPython: --python, the box's own, the bundled one; and unpacking the bundle safely."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from cosyinstall.bundledpython import probe_libdir, unpack_bundled, venv_libpython_dir
from cosyinstall.errors import ArtifactRejected
from cosyinstall.probe import PythonFound
from cosyinstall.python_choice import BundledPython, bundled_from_meta, choose
from support import find_python

PY39 = PythonFound("/usr/bin/python3.9", (3, 9, 2), "CPython")
PY310 = PythonFound("/opt/py/bin/python3.10", (3, 10, 13), "CPython")
PYPY = PythonFound("/usr/bin/pypy3", (3, 10, 14), "PyPy")
BUNDLE = BundledPython("python/cpython-3.10.19+x-install_only.tar.gz", "3.10.19", (2, 17), "lib/libpython3.10.so.1.0")
NEW_BUNDLE = BundledPython(BUNDLE.member, "3.10.19", (2, 35), BUNDLE.libpython)


def test_box_cpython_first() -> None:
    got = choose([PY39, PY310], "3.10", bundled=BUNDLE, glibc=(2, 31))
    assert got.finding.ok and got.python == PY310 and got.bundled is None


def test_bundled_when_the_box_has_another_version() -> None:
    got = choose([PY39], "3.10", bundled=BUNDLE, glibc=(2, 31))
    assert got.finding.ok and got.bundled == BUNDLE
    assert got.finding.detail == "bundled CPython 3.10.19: this box has 3.9 only"


def test_pypy_is_not_a_cpython() -> None:
    got = choose([PYPY], "3.10", bundled=BUNDLE, glibc=(2, 31))
    assert got.bundled == BUNDLE and got.finding.detail.endswith("this box has no CPython")


def test_glibc_older_than_the_bundle_floor_names_both() -> None:
    got = choose([PY39], "3.10", bundled=NEW_BUNDLE, glibc=(2, 31))
    assert not got.finding.ok and got.finding.code == 4
    assert "glibc 2.35" in got.finding.detail and "glibc 2.31" in got.finding.detail


def test_no_bundle_and_no_cpython_names_bundle_python() -> None:
    got = choose([PY39], "3.10", glibc=(2, 31))
    assert not got.finding.ok and "bundle-python" in got.finding.hint
    assert "/usr/bin/python3.9 3.9" in got.finding.detail


def test_asked_python_wins_and_is_never_replaced() -> None:
    assert choose([PY310], "3.10", asked=PY310.path, bundled=BUNDLE).python == PY310
    wrong = choose([PY39], "3.10", asked=PY39.path, bundled=BUNDLE)
    assert not wrong.finding.ok and "--python" in wrong.finding.detail


def test_shared_libpython() -> None:
    no_lib = {PY310.path: None}
    got = choose([PY310], "3.10", shared=True, bundled=BUNDLE, glibc=(2, 31), libdirs=no_lib)
    assert got.bundled == BUNDLE and "has no libpython3.10.so.1.0" in got.finding.detail
    with_lib = choose([PY310], "3.10", shared=True, bundled=BUNDLE, libdirs={PY310.path: "/opt/py/lib"})
    assert with_lib.python == PY310 and with_lib.libdir == "/opt/py/lib"
    neither = choose([PY310], "3.10", shared=True, libdirs=no_lib)
    assert not neither.finding.ok and "libpython3.10.so.1.0" in neither.finding.detail
    asked = choose([PY310], "3.10", asked=PY310.path, shared=True, libdirs=no_lib, bundled=BUNDLE)
    assert not asked.finding.ok and "shared-libpython" in asked.finding.detail


def test_bundled_from_meta() -> None:
    meta = {"bundled-python": {"member": BUNDLE.member, "version": "3.10.19", "glibc_floor": "2.17",
                               "libpython": "lib/libpython3.10.so.1.0"}}
    assert bundled_from_meta(meta) == BUNDLE
    assert bundled_from_meta({}) is None


# -- I/O on real interpreters and real archives -------------------------------------------


def test_probe_libdir_of_a_real_shared_cpython() -> None:
    exe = find_python("3.10")
    assert exe, "a CPython 3.10 is needed (pyenv prefix 3.10)"
    libdir = probe_libdir(exe)
    # pyenv's 3.10 here is built with --enable-shared (the stand-in relies on it)
    assert libdir and os.path.isfile(os.path.join(libdir, "libpython3.10.so.1.0"))


def _tar(path: Path, members: list) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode = kind, size, link, mode
    return info


@pytest.mark.parametrize("bad", [
    (_info("/etc/passwd"), b""),
    (_info("python/../../evil"), b""),
    (_info("other/file"), b""),
    (_info("python/bin/up", tarfile.SYMTYPE, link="../../.."), None),
    (_info("python/bin/abs", tarfile.SYMTYPE, link="/usr/bin/python3"), None),
    (_info("python/hard", tarfile.LNKTYPE, link="etc/passwd"), None),
    (_info("python/dev", tarfile.CHRTYPE), None),
])
def test_unsafe_members_are_refused(tmp_path: Path, bad) -> None:
    archive = _tar(tmp_path / "a.tar.gz", [(_info("python", tarfile.DIRTYPE, mode=0o755), None), bad])
    with pytest.raises(ArtifactRejected):
        unpack_bundled(str(archive), str(tmp_path / "root"), BUNDLE)
    assert not (tmp_path / "root" / BUNDLE.version).exists()
    assert not (tmp_path / "evil").exists()


def test_real_cpython_unpacked_runs_and_its_venv_finds_libpython(tmp_path: Path) -> None:
    from pythonstandin import make_standin
    from boximages import cache_root

    archive = make_standin(cache_root().parent / "standin")
    version = archive.name.split("-")[1].split("+")[0]
    bundled = BundledPython("python/" + archive.name, version, (2, 17), "lib/libpython3.10.so.1.0")
    found = unpack_bundled(str(archive), str(tmp_path / "python"), bundled)
    assert found.minor == "3.10" and found.path.startswith(str(tmp_path))
    assert probe_libdir(found.path) == str(tmp_path / "python" / version / "lib")
    # A second unpack of the same member reuses the tree.
    inode = os.stat(found.path).st_ino
    assert unpack_bundled(str(archive), str(tmp_path / "python"), bundled).path == found.path
    assert os.stat(found.path).st_ino == inode
    import subprocess
    subprocess.run([found.path, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    assert venv_libpython_dir(str(tmp_path / "venv")) == str(tmp_path / "python" / version / "lib")


def test_launcher_puts_libpython_after_the_venv_lib() -> None:
    from cosyinstall.launch import launch_env, with_libpython
    from cosyinstall.tree import InstallTree

    env = launch_env(InstallTree("/to"), {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/usr/local/lib"})
    got = with_libpython(env, "/to/.cosyinstall/python/3.10.19/lib")["LD_LIBRARY_PATH"].split(":")
    assert got == ["/to/.venv/lib", "/to/.cosyinstall/python/3.10.19/lib", "/usr/local/lib"]
    assert with_libpython(env, None) == env
