"""The pyz on the oldest and newest supported CPython (3.8, 3.13), standard library only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import apply_argv, find_python, pyz, run

# Every module imported (some only load on rare paths: Deflate64, hand-made zips), then the
# pure-Python Deflate64 decoder run on a stream built here, so no 3.9+ API hides in them.
_SMOKE = r"""
import importlib, pkgutil, sys
sys.path.insert(0, sys.argv[1])
import cosyinstall
for mod in pkgutil.iter_modules(cosyinstall.__path__):
    importlib.import_module("cosyinstall." + mod.name)
from cosyinstall.inflate64 import Deflate64Reader
# A stored block inside a Deflate64 stream: final=1, type=0, then LEN/NLEN and the bytes.
data = b"stdlib only " * 1000
raw = bytes([1]) + len(data).to_bytes(2, "little") + (len(data) ^ 0xFFFF).to_bytes(2, "little") + data
chunks = iter([raw[i:i + 100] for i in range(0, len(raw), 100)])
assert Deflate64Reader(lambda: next(chunks, b"")).read() == data
print("ok", sys.version_info[:2])
"""


@pytest.mark.parametrize("minor", ["3.8", "3.13"])
def test_check_apply_and_verify_run_on_old_and_new_cpython(minor: str, dist: Path, tmp_path: Path) -> None:
    python = find_python(minor)
    assert python is not None, "CPython %s must be findable (pyenv or uv) on this kind of machine" % minor
    smoke = subprocess.run([python, "-I", "-c", _SMOKE, str(dist / "cosyinstall.pyz")], capture_output=True, text=True)
    assert smoke.returncode == 0 and smoke.stdout.startswith("ok"), smoke.stderr
    to = tmp_path / "to"
    check = run(["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + " ".join(
        pyz(dist, "check", "--from", str(dist), "--to", str(to), python=python))])
    assert check.returncode == 0, check.stdout + check.stderr
    assert "preflight passed" in check.stdout and not to.exists()
    applied = run(apply_argv(dist, to, python=python))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "installed into %s (app, venv, models)" % to in applied.stdout
    verify = run(pyz(dist, "verify", "--to", str(to), python=python))
    assert verify.returncode == 0, verify.stderr
    again = run(apply_argv(dist, to, python=python))
    assert again.returncode == 0 and "nothing changed" in again.stdout
