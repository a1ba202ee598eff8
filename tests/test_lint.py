"""`ruff check` and `mypy` pass on the repository, configured in pyproject.toml.

mypy checks the installer with Python 3.8 semantics (the oldest CPython the pyz must run on) and
the builder with 3.10; it takes one python_version per run, so each package gets its own run.
Both tools are pinned in the `test` extras, which tests/run.sh installs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=str(REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_ruff_check_passes() -> None:
    proc = _run("ruff", "check", "--no-cache", "builder", "installer", "tests", "bench", "examples")
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("package, python", [("cosyinstall", "3.8"), ("cosybuild", "3.10")])
def test_mypy_passes(package: str, python: str) -> None:
    proc = _run("mypy", "--python-version", python, "-p", package)
    assert proc.returncode == 0, proc.stdout
