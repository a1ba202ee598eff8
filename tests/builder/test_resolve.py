"""cosybuild lock against a loopback index: uv's explanation on conflicts, best wheel per target,
no URLs in the lock, and pack refusing a stale lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosybuild.resolve import choose_file
from loopindex import LoopIndex, make_wheel, uv_wheel, write_manifest as manifest
from support import cosybuild, one_sentence


@pytest.fixture
def conflicting(tmp_path: Path):
    files = tmp_path / "files"
    files.mkdir()
    made = [make_wheel(files, "alpha", "1.0", ["shared==1.0"]), make_wheel(files, "beta", "1.0", ["shared==2.0"]),
            make_wheel(files, "shared", "1.0"), make_wheel(files, "shared", "2.0"), uv_wheel(files)]
    with LoopIndex(made) as index:
        yield index


def test_unsatisfiable_set_prints_uvs_explanation_and_exits_3(tmp_path: Path, conflicting: LoopIndex) -> None:
    path = manifest(tmp_path, ["alpha==1.0", "beta==1.0"], conflicting.url)
    proc = cosybuild("lock", str(path))
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert str(path) in line and "do not resolve for CPython 3.10" in line
    # uv's own reasoning reaches the user: which requirement conflicts with which.
    assert "alpha==1.0" in line and "shared" in line and "cosybuild lock" in line
    assert not (tmp_path / "m.lock.json").exists()


def test_lock_pins_files_and_never_a_url(tmp_path: Path, conflicting: LoopIndex) -> None:
    path = manifest(tmp_path, ["alpha==1.0"], conflicting.url)
    proc = cosybuild("lock", str(path))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "m.lock.json").read_text(encoding="utf-8")
    assert "127.0.0.1" not in text and "http" not in text
    files = {f["name"]: f for f in json.loads(text)["packages"]["files"]}
    assert sorted(files) == ["alpha", "shared"]
    assert json.loads(text)["packages"]["tools"]["uv"]["filename"].startswith("uv-")
    wheel = Path(conflicting.files[files["shared"]["filename"]])
    assert files["shared"]["version"] == "1.0" and files["shared"]["size"] == wheel.stat().st_size
    assert len(files["shared"]["sha256"]) == 64


def test_pack_on_a_stale_lock_exits_3_and_says_to_lock(tmp_path: Path, conflicting: LoopIndex) -> None:
    path = manifest(tmp_path, ["alpha==1.0"], conflicting.url)
    assert cosybuild("lock", str(path)).returncode == 0
    path.write_text(path.read_text(encoding="utf-8").replace('"alpha==1.0"', '"beta==1.0"'), encoding="utf-8")
    proc = cosybuild("pack", str(path), "--only", "packages", "--out", str(tmp_path / "dist"))
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert "no longer matches" in line and "packages changed" in line and "cosybuild lock" in line
    assert not (tmp_path / "dist" / "offline_packages.zip").exists()


def _wheel(name: str) -> dict:
    return {"name": name, "size": 1, "hashes": {"sha256": "0" * 64}}


def test_the_wheel_the_target_would_install_is_chosen() -> None:
    # soundfile's any-wheel lacks the bundled C library: the manylinux one must win, whatever the order.
    pkg = {"name": "soundfile", "version": "0.12.1", "wheels": [
        _wheel("soundfile-0.12.1-py2.py3-none-any.whl"),
        _wheel("soundfile-0.12.1-py2.py3-none-manylinux_2_17_x86_64.whl")]}
    assert choose_file(pkg, "3.10", "x86_64-manylinux_2_28")["name"].endswith("manylinux_2_17_x86_64.whl")
    pkg = {"name": "pillow", "version": "11.3.0", "wheels": [
        _wheel("pillow-11.3.0-cp310-cp310-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"),
        _wheel("pillow-11.3.0-cp310-cp310-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"),
        _wheel("pillow-11.3.0-cp311-cp311-manylinux_2_28_x86_64.whl")]}
    assert "manylinux_2_28" in choose_file(pkg, "3.10", "x86_64-manylinux_2_28")["name"]
    # The newer manylinux wheel does not run on an older floor.
    assert "manylinux2014" in choose_file(pkg, "3.10", "x86_64-manylinux_2_17")["name"]
    assert choose_file({"name": "x", "sdist": _wheel("x-1.tar.gz")}, "3.10", "x86_64-manylinux_2_28")["name"] == "x-1.tar.gz"
