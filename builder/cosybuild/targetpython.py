"""Find a CPython of the target's minor version on the build machine, at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cosybuild.uvtool import run_uv

__all__ = ["find_target_python", "ENV_VAR"]

# An explicit interpreter wins over every search (CI images, conda, unusual layouts).
ENV_VAR = "COSYBUILD_TARGET_PYTHON"


def _candidates(minor: str) -> list[str]:
    found = []
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        found.append(explicit)
    pyenv = shutil.which("pyenv")
    if pyenv:
        proc = subprocess.run([pyenv, "prefix", minor], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            found.append(str(Path(proc.stdout.strip().splitlines()[0]) / "bin" / ("python" + minor)))
    proc = run_uv(["python", "find", "--no-python-downloads", minor])
    if proc.returncode == 0 and proc.stdout.strip():
        found.append(proc.stdout.strip())
    which = shutil.which("python" + minor)
    if which:
        found.append(which)
    return found


def _is_cpython(exe: str, minor: str) -> bool:
    probe = "import sys; print(sys.implementation.name, '%d.%d' % sys.version_info[:2])"
    try:
        proc = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.split() == ["cpython", minor]


def find_target_python(minor: str) -> str | None:
    """A working CPython `minor` (e.g. "3.10"): $COSYBUILD_TARGET_PYTHON, pyenv, uv, then PATH."""
    for exe in _candidates(minor):
        if _is_cpython(exe, minor):
            return exe
    return None
