"""Issue 14, point 7: the pyz started by a Python older than 3.8 says, in one sentence, which Python it needs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosybuild.pyz import build_pyz
from support import find_python, run


@pytest.fixture(scope="module")
def fresh_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("pyz") / "cosyinstall.pyz")


@pytest.mark.parametrize("minor", ["3.6", "3.7"])
def test_an_old_python_gets_one_sentence(fresh_pyz: Path, minor: str) -> None:
    python = find_python(minor)
    assert python, "pyenv provides CPython %s on this machine (pyenv prefix %s)" % (minor, minor)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANG", "LC_"))}
    proc = run([python, str(fresh_pyz), "check"], env=env)
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr and "SyntaxError" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("cosyinstall: error: this is Python %s" % minor) and "CPython 3.8 to 3.13" in lines[0]
    zh = run([python, str(fresh_pyz), "check"], env=dict(env, LANG="zh_CN.UTF-8"))
    assert zh.returncode == 4 and "需要 CPython 3.8 到 3.13" in zh.stderr


def test_a_supported_python_runs_the_same_pyz(fresh_pyz: Path) -> None:
    proc = run([find_python("3.8") or "python3", str(fresh_pyz), "--version"])
    assert proc.returncode == 0 and proc.stdout.startswith("cosyinstall ")
