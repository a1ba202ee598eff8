"""Status on its own, and a whole start-wait-stop with the direct launcher and no MPI."""

from __future__ import annotations

import io
import os
import signal
import sys

from serverprocs import record_of, spawn_session

from cosyinstall.artifact import ServerSpec
from cosyinstall.progress import Reporter
from cosyinstall.server_start import start_server
from cosyinstall.server_status import server_status
from cosyinstall.server_stop import stop_server
from cosyinstall.server_wait import wait_ready
from cosyinstall.tree import InstallTree


def _http_spec(port: int) -> ServerSpec:
    # Python's own http.server answers 200 on / with a directory listing: a real server
    # that needs no venv, so the direct launcher can run it from a bare tree.
    return ServerSpec(
        command=(sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"),
        launcher="direct",
        port=port,
        ready_timeout=30.0,
        silence_timeout=30.0,
    )


def test_status_with_nothing_installed(tmp_path) -> None:
    tree = InstallTree(str(tmp_path / "nothing"))
    assert server_status(tree) == {
        "running": False,
        "ready": False,
        "pid": None,
        "port": None,
        "uptime": None,
        "log": tree.server_log,
        "launcher": None,
        "url": None,
        "http_status": None,
        "stale_pid_file": False,
        "leftovers": [],
    }
    assert not os.path.exists(tree.root), "status must not create the tree"


def test_status_running_then_stopped(tmp_path, port) -> None:
    tree = InstallTree(str(tmp_path))
    spec = _http_spec(port)
    rep = Reporter(stream=io.StringIO(), live=False, line_interval=1.0)
    pid = start_server(tree, spec, reporter=rep)
    try:
        wait_ready(tree, spec, reporter=rep, poll=0.1)
        running = server_status(tree, spec)
        assert running["running"] is True and running["ready"] is True
        assert running["pid"] == pid and running["port"] == port and running["launcher"] == "direct"
        assert running["http_status"] == 200 and running["url"] == "http://127.0.0.1:%d/" % port
        assert 0 <= running["uptime"] < 60 and running["stale_pid_file"] is False
    finally:
        assert stop_server(tree, grace=5.0) is True
    stopped = server_status(tree, spec)
    assert stopped["running"] is False and stopped["ready"] is False and stopped["pid"] is None
    assert stopped["port"] == port, "with no record the manifest's port is shown"
    assert stopped["stale_pid_file"] is False and stopped["leftovers"] == []


def test_status_of_a_record_whose_server_died(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    proc = spawn_session(tree, "exec sleep 60")
    record_of(tree, proc, port=7123)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = server_status(tree)
    assert status["running"] is False and status["stale_pid_file"] is True
    assert status["port"] == 7123 and status["leftovers"] == []
