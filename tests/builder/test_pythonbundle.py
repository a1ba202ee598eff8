"""Pinning the bundled CPython through the real `uv python install`, from a downloads JSON and an
archive served on loopback (a STAND-IN for python-build-standalone's downloads, which this
machine cannot reach; see tests/pythonstandin.py)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from boximages import cache_root
from cosybuild.cache import Cache
from cosybuild.pythonbundle import PythonPin, pin_python, python_archive, target_download
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from pythonstandin import DownloadsServer, make_standin


@pytest.fixture(scope="module")
def standin() -> Path:
    return make_standin(cache_root().parent / "standin")


@pytest.fixture
def served(standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with DownloadsServer(tmp_path / "serve", standin) as server:
        monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", server.json_url)
        yield server


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pin_records_the_archive_uv_downloaded(served: DownloadsServer, standin: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    pin = pin_python("3.10", "x86_64-manylinux_2_28", cache)
    assert pin.archive == standin.name
    assert (pin.size, pin.sha256) == (standin.stat().st_size, sha256(standin))
    assert pin.version.startswith("3.10.") and pin.key == "cpython-%s-linux-x86_64-gnu" % pin.version
    assert pin.libpython == "lib/libpython3.10.so.1.0"
    with tarfile.open(standin) as tar:
        assert "python/" + pin.libpython in tar.getnames()
    # The stand-in was compiled on this machine: its floor is a real glibc of the 2.x series,
    # no newer than the glibc running here.
    major, minor = (int(x) for x in pin.glibc_floor.split("."))
    import os
    here = tuple(int(x) for x in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2])
    assert major == 2 and 17 <= minor and (major, minor) <= here
    assert cache.get(pin.sha256, pin.size) is not None
    assert PythonPin.from_dict(pin.to_dict()) == pin
    assert served.gets[standin.name] == 1


def test_pack_takes_the_archive_from_the_cache_then_from_uv(served: DownloadsServer, standin: Path, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    pin = pin_python("3.10", "x86_64-manylinux_2_28", cache)
    assert python_archive(pin, cache) == cache.get(pin.sha256, pin.size)
    assert served.gets[standin.name] == 1  # nothing downloaded again
    fresh = Cache(tmp_path / "fresh")
    assert sha256(python_archive(pin, fresh)) == pin.sha256
    assert served.gets[standin.name] == 2


def test_a_changed_download_is_refused(served: DownloadsServer, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    pin = pin_python("3.10", "x86_64-manylinux_2_28", cache)
    other = PythonPin(pin.key, pin.version, pin.archive, pin.size, "0" * 64, pin.glibc_floor, pin.libpython)
    with pytest.raises(ArtifactRejected, match="not the locked"):
        python_archive(other, Cache(tmp_path / "fresh"))


def test_no_download_for_the_target(served: DownloadsServer) -> None:
    with pytest.raises(EnvironmentUnsuitable, match="no CPython 3.9 download"):
        target_download("3.9", "x86_64-manylinux_2_28")
    assert target_download("3.10", "x86_64-manylinux_2_28")["arch"] == "x86_64"
