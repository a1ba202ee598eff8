"""A lock made against one index is packed from another, verified byte for byte, and cached."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from loopindex import LoopIndex, make_wheel, uv_wheel, write_manifest
from support import cosybuild, one_sentence


def env(index: LoopIndex, cache: Path) -> dict:
    """uv's own variable names the index at this moment; the manifest names none."""
    return dict(os.environ, UV_DEFAULT_INDEX=index.url, COSYBUILD_CACHE=str(cache))


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    files = tmp_path / "files"
    files.mkdir()
    return [make_wheel(files, "alpha", "1.0", ["shared>=1"]), make_wheel(files, "shared", "1.0", payload="X = 1\n" * 500),
            uv_wheel(files)]


@pytest.fixture
def locked(tmp_path: Path, wheels: list[Path]) -> Path:
    """The manifest, locked against index A, which is then shut down."""
    path = write_manifest(tmp_path, ["alpha==1.0"])
    with LoopIndex(wheels) as a:
        proc = cosybuild("lock", str(path), env=env(a, tmp_path / "cache-a"))
        assert proc.returncode == 0, proc.stderr
    return path


def test_lock_from_a_is_packed_from_b_and_packing_again_downloads_nothing(tmp_path: Path, wheels: list[Path],
                                                                          locked: Path) -> None:
    cache = tmp_path / "cache"
    with LoopIndex(wheels) as b:
        first = cosybuild("pack", str(locked), "--only", "packages", "--out", str(tmp_path / "d1"), env=env(b, cache))
        assert first.returncode == 0, first.stderr
        assert sorted(os.path.basename(p) for p in b.file_gets()) == sorted(w.name for w in wheels)
        seen = len(b.requests)
        again = cosybuild("pack", str(locked), "--only", "packages", "--out", str(tmp_path / "d2"), env=env(b, cache))
        assert again.returncode == 0, again.stderr
        # Everything came from the cache: the index was not even asked where the files are.
        assert len(b.requests) == seen, b.requests[seen:]
    one = (tmp_path / "d1" / "offline_packages.zip").read_bytes()
    assert one == (tmp_path / "d2" / "offline_packages.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "d1" / "offline_packages.zip") as z:
        names = set(z.namelist())
        reqs = z.read("requirements.txt").decode()
    assert {"wheels/alpha-1.0-py3-none-any.whl", "wheels/shared-1.0-py3-none-any.whl", "uv/uv", "app/server.py"} <= names
    lock = json.loads((tmp_path / "m.lock.json").read_text(encoding="utf-8"))
    for f in lock["packages"]["files"]:
        assert "%s==%s --hash=sha256:%s" % (f["name"], f["version"], f["sha256"]) in reqs
    # --only packages leaves the models artifact alone.
    assert not (tmp_path / "d1" / "pretrained_models.zip").exists()


def test_different_bytes_from_the_mirror_are_refused_and_not_cached(tmp_path: Path, wheels: list[Path],
                                                                     locked: Path) -> None:
    shared = wheels[1]
    data = bytearray(shared.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the hash can tell
    cache = tmp_path / "cache"
    with LoopIndex(wheels, served={shared.name: bytes(data)}) as b:
        proc = cosybuild("pack", str(locked), "--only", "packages", "--out", str(tmp_path / "dist"), env=env(b, cache))
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert shared.name in line and "does not match the lock" in line
    lock = json.loads((tmp_path / "m.lock.json").read_text(encoding="utf-8"))
    digest = next(f["sha256"] for f in lock["packages"]["files"] if f["name"] == "shared")
    kept = [p.name for p in cache.rglob("*") if p.is_file()]
    assert not any(name.startswith(digest) for name in kept), kept
    assert not (tmp_path / "dist" / "offline_packages.zip").exists()


def test_only_models_packs_the_models_alone(tmp_path: Path, locked: Path) -> None:
    out = tmp_path / "dist"
    proc = cosybuild("pack", str(locked), "--only", "models", "--out", str(out), env=dict(os.environ, COSYBUILD_CACHE=str(tmp_path / "c")))
    assert proc.returncode == 0, proc.stderr
    assert (out / "pretrained_models.zip").is_file() and not (out / "offline_packages.zip").exists()
    with zipfile.ZipFile(out / "pretrained_models.zip") as z:
        assert "model/weights.bin" in z.namelist()
    sums = (out / "SHA256SUMS").read_text(encoding="utf-8")
    assert "pretrained_models.zip" in sums and "offline_packages.zip" not in sums
