"""sdist-only packages become wheels at pack time; the box installs them by hash, never builds."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from cosybuild.profile import load_profile
from cosybuild.resolve import LockedFile
from cosybuild.sdists import _check_target, max_glibc
from cosybuild.uvtool import uv_bin
from cosyinstall.errors import EnvironmentUnsuitable
from loopindex import LoopIndex, make_sdist, make_wheel, uv_wheel, write_manifest
from support import cosybuild


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, Path, subprocess.CompletedProcess]:
    files = tmp_path / "files"
    files.mkdir()
    made = [make_sdist(files, "puresrc", "2.0", ["shared==1.0"]), make_wheel(files, "shared", "1.0"), uv_wheel(files)]
    with LoopIndex(made) as index:
        path = write_manifest(tmp_path, ["puresrc==2.0"], index.url)
        env = dict(os.environ, COSYBUILD_CACHE=str(tmp_path / "cache"))
        proc = cosybuild("pack", str(path), "--only", "packages", "--out", str(tmp_path / "dist"), env=env)
        assert proc.returncode == 0, proc.stderr
        again = cosybuild("pack", str(path), "--only", "packages", "--out", str(tmp_path / "again"), env=env)
        assert again.returncode == 0, again.stderr
    return path, tmp_path / "dist", again


def test_pure_sdist_becomes_a_hashed_wheel_in_the_artifact(tmp_path: Path, packed) -> None:
    path, dist, _again = packed
    lock = json.loads(path.with_suffix(".lock.json").read_text(encoding="utf-8"))
    pinned = {f["name"]: f for f in lock["packages"]["files"]}
    # The lock pins the sdist; the wheel built from it is recorded in the artifact.
    assert pinned["puresrc"]["filename"] == "puresrc-2.0.tar.gz"
    with zipfile.ZipFile(dist / "offline_packages.zip") as z:
        manifest = json.loads(z.read("MANIFEST.json"))
        reqs = z.read("requirements.txt").decode()
        z.extractall(tmp_path / "box")
    built = next(p for p in manifest["packages"] if p["name"] == "puresrc")
    assert built["filename"] == "puresrc-2.0-py3-none-any.whl"
    assert built["built-from"] == {"filename": "puresrc-2.0.tar.gz", "size": pinned["puresrc"]["size"],
                                   "sha256": pinned["puresrc"]["sha256"]}
    entry = next(f for f in manifest["files"] if f["path"] == "wheels/puresrc-2.0-py3-none-any.whl")
    assert entry["sha256"] == built["sha256"]
    assert "puresrc==2.0 --hash=sha256:%s" % built["sha256"] in reqs
    assert not any(f["path"].endswith(".tar.gz") for f in manifest["files"])


def test_the_built_wheel_installs_offline_with_require_hashes(tmp_path: Path, packed) -> None:
    _path, _dist, _again = packed
    box = tmp_path / "box"
    with zipfile.ZipFile(_dist / "offline_packages.zip") as z:
        z.extractall(box)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    env.update(UV_OFFLINE="1", UV_NO_CONFIG="1", UV_CACHE_DIR=str(tmp_path / "uvc"))
    venv = tmp_path / "venv"
    subprocess.run([uv_bin(), "venv", "--quiet", str(venv)], check=True, env=env)
    proc = subprocess.run([uv_bin(), "pip", "install", "--python", str(venv / "bin" / "python"), "--no-index",
                           "--require-hashes", "--no-build", "--find-links", str(box / "wheels"),
                           "-r", str(box / "requirements.txt")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import puresrc; print(puresrc.VERSION, puresrc.BUILT)"],
                         capture_output=True, text=True)
    assert out.stdout.split() == ["2.0", "True"], out.stderr


def test_packing_again_builds_nothing(packed) -> None:
    _path, _dist, again = packed
    assert "building puresrc" not in again.stderr


def _fake(tmp_path: Path, name: str, so_bytes: bytes = b"") -> Path:
    wheel = tmp_path / name
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/_native.cpython-310-x86_64-linux-gnu.so", so_bytes or b"\x7fELF")
    return wheel


@pytest.fixture
def profile(tmp_path: Path):
    return load_profile(str(write_manifest(tmp_path, ["x==1"], "http://127.0.0.1:9/simple")))


def test_a_native_wheel_for_another_machine_is_refused_naming_the_package(tmp_path: Path, profile) -> None:
    sdist = LockedFile("pyworld", "0.3.4", "pyworld-0.3.4.tar.gz", 1, "0" * 64)
    wheel = _fake(tmp_path, "pyworld-0.3.4-cp310-cp310-macosx_11_0_arm64.whl")
    with pytest.raises(EnvironmentUnsuitable) as err:
        _check_target(profile, sdist, wheel, native_ok=False)
    text = str(err.value)
    assert "pyworld 0.3.4 has only an sdist with native code" in text and "CPython 3.10" in text
    # Built here for linux x86_64 with the target CPython: accepted.
    _check_target(profile, sdist, _fake(tmp_path, "pyworld-0.3.4-cp310-cp310-linux_x86_64.whl"), native_ok=True)


def test_a_native_wheel_needing_a_newer_glibc_than_the_target_is_refused(tmp_path: Path, profile) -> None:
    sdist = LockedFile("pyworld", "0.3.4", "pyworld-0.3.4.tar.gz", 1, "0" * 64)
    wheel = _fake(tmp_path, "pyworld-0.3.4-cp310-cp310-linux_x86_64.whl", b"\0GLIBC_2.14\0" + b"x" * 100 + b"GLIBC_2.34\0")
    assert max_glibc(wheel) == (2, 34)
    with pytest.raises(EnvironmentUnsuitable, match="needs glibc 2.34, newer than the 2.28"):
        _check_target(profile, sdist, wheel, native_ok=True)
