"""Suite-wide fixtures: a scrubbed environment and the demo packed once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import cosybuild

_SCRUB = ("UV_", "PIP_", "HF_", "MODELSCOPE_", "COSY", "VIRTUAL_ENV")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell must not leak index, hub or cache settings into a test."""
    for key in list(os.environ):
        if key.startswith(_SCRUB) and key != "COSYBUILD_CACHE":
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One download cache for the session, so packing twice downloads once."""
    path = tmp_path_factory.mktemp("cosybuild-cache")
    os.environ["COSYBUILD_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def demo_dist(tmp_path_factory: pytest.TempPathFactory, build_cache: Path) -> Path:
    """`cosybuild pack demo` run once; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("demo") / "dist"
    proc = cosybuild("pack", "demo", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def dist(demo_dist: Path, tmp_path: Path) -> Path:
    """A private copy of the packed demo, free to damage."""
    dest = tmp_path / "upload"
    shutil.copytree(demo_dist, dest)
    return dest
