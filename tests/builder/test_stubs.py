"""Wheel-stub sdists (their build downloads the real wheel from another index) are refused at
lock time, naming the package and that index; only-binary plus the real index avoids them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cosybuild.stubs import stub_from_uv_output
from loopindex import LoopIndex, make_sdist, make_wheel, uv_wheel, write_manifest
from support import cosybuild, one_sentence

STUB = """[build-system]
requires = ["wheel-stub"]
build-backend = "wheel_stub.buildapi"

[tool.wheel_stub]
index_url = "%s"
"""


@pytest.fixture
def indexes(tmp_path: Path):
    """A serves the stub sdist (as the default index does); B serves the real wheel."""
    a_files, b_files = tmp_path / "a", tmp_path / "b"
    a_files.mkdir()
    b_files.mkdir()
    real = [make_wheel(b_files, "trt-libs", "10.0", tag="py3-none-manylinux_2_17_x86_64")]
    with LoopIndex(real) as b:
        stub = make_sdist(a_files, "trt-libs", "10.0", pyproject=STUB % b.url, static=True)
        with LoopIndex([stub, make_wheel(a_files, "app-dep", "1.0", ["trt-libs==10.0"]), uv_wheel(a_files)]) as a:
            yield a, b


def test_a_wheel_stub_is_refused_at_lock_time_naming_package_and_index(tmp_path: Path, indexes) -> None:
    a, b = indexes
    path = write_manifest(tmp_path, ["app-dep==1.0"], a.url)
    proc = cosybuild("lock", str(path))
    assert proc.returncode == 3, proc.stderr
    line = one_sentence(proc.stderr)
    assert "trt-libs 10.0 is a wheel-stub" in line and b.url in line
    assert "only-binary" in line and "extra-index-urls" in line
    assert not path.with_suffix(".lock.json").exists()
    # Detected from its pyproject.toml: the stub was never built (its backend was never fetched).
    assert not any("wheel-stub" in r or "wheel_stub" in r for r in a.requests)


def test_only_binary_with_the_real_index_locks_the_real_wheel(tmp_path: Path, indexes) -> None:
    a, b = indexes
    extra = 'extra-index-urls = ["%s"]\nonly-binary = ["trt-libs"]' % b.url
    path = write_manifest(tmp_path, ["app-dep==1.0"], a.url, extra)
    proc = cosybuild("lock", str(path))
    assert proc.returncode == 0, proc.stderr
    files = {f["name"]: f for f in json.loads(path.with_suffix(".lock.json").read_text())["packages"]["files"]}
    assert files["trt-libs"]["filename"] == "trt_libs-10.0-py3-none-manylinux_2_17_x86_64.whl"


def test_uvs_report_of_a_failed_stub_build_names_package_and_index() -> None:
    # What uv relays when it had to build a stub's metadata and the real index was unreachable.
    text = """error: Failed to build `trt-libs==10.0`
      File "/tmp/x/wheel_stub/error.py", line 67, in report_install_failure
    wheel_stub.error.InstallFailedError:
    The installation of trt-libs for version 10.0 failed.

    This is a special placeholder package which downloads a real wheel package
    from http://127.0.0.1:9/simple/. If http://127.0.0.1:9/simple/ is not reachable, we
"""
    err = stub_from_uv_output(text)
    assert err is not None and err.exit_code == 3
    assert "trt-libs 10.0 is a wheel-stub" in str(err) and "http://127.0.0.1:9/simple/" in str(err)
    assert stub_from_uv_output("error: No solution found when resolving dependencies") is None
