"""Shared test helpers: find interpreters at run time, run commands offline, pack the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYZ = "cosyinstall.pyz"


def find_python(minor: str) -> str | None:
    """A CPython of the given minor version on this machine, found via pyenv or uv."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        proc = subprocess.run([pyenv, "prefix", minor], capture_output=True, text=True)
        if proc.returncode == 0:
            exe = Path(proc.stdout.strip().splitlines()[0]) / "bin" / ("python" + minor)
            if exe.is_file():
                return str(exe)
    uv = shutil.which("uv")
    if uv:
        proc = subprocess.run([uv, "python", "find", "--no-python-downloads", minor], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    return shutil.which("python" + minor)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline(script: str) -> list[str]:
    """argv running a shell script in a new network namespace with only loopback up."""
    return ["unshare", "-n", "sh", "-c", "ip link set lo up && " + script]


def run(argv: list[str], timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def cosybuild(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "cosybuild", *args], cwd=cwd or REPO, env=env)


def pyz(dist: Path, *args: str, python: str = "python3") -> list[str]:
    return [python, str(dist / PYZ), *args]


def copy_dist(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def one_sentence(stderr: str) -> str:
    """The error line a user sees; asserts there is no traceback around it."""
    assert "Traceback" not in stderr, stderr
    lines = [l for l in stderr.splitlines() if l.startswith("cosyinstall: ") or l.startswith("cosybuild: ")]
    assert lines, stderr
    return lines[-1]


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (inode, mtime_ns, size) for every file under root, to prove nothing was rewritten."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out
