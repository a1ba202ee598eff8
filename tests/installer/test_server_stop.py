"""Stopping on its own, with shell scripts standing in for the server: the group, the stubborn, the orphans."""

from __future__ import annotations

import os
import signal
import time
from typing import List

from serverprocs import alive, record_of, spawn_session, wait_members

from cosyinstall.procs import environ_value, proc_cmdline, session_processes
from cosyinstall.server_log import tail_log
from cosyinstall.server_record import read_record
from cosyinstall.server_stop import stop_server
from cosyinstall.tree import InstallTree


def test_stop_ends_the_whole_process_group(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    proc = spawn_session(tree, "sleep 60 & sleep 60 & wait")
    record_of(tree, proc)
    group = wait_members(proc.pid, 3)
    assert stop_server(tree, grace=5.0) is True
    assert session_processes(proc.pid) == []
    assert not any(alive(p) for p in group)
    assert read_record(tree) is None
    assert tail_log(tree, 1)[0].endswith("stopped the server (pid %d) ====" % proc.pid)
    assert stop_server(tree) is False, "a second stop finds nothing to stop"


def test_stop_kills_a_group_that_ignores_sigterm_after_the_grace(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    # An ignored signal stays ignored across fork and exec: every member shrugs off SIGTERM.
    proc = spawn_session(tree, "trap '' TERM; sleep 60 & sleep 60 & wait")
    record_of(tree, proc)
    wait_members(proc.pid, 3)
    began = time.monotonic()
    assert stop_server(tree, grace=1.0) is True
    assert 1.0 <= time.monotonic() - began < 8.0
    assert session_processes(proc.pid) == []


def _children_once_execed(sid: int) -> List[int]:
    """The leader's two children once both run sleep (before exec they still carry the shell's environment)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        children = [p for p in session_processes(sid) if p != sid]
        if len(children) == 2 and all(proc_cmdline(p).startswith("sleep ") for p in children):
            return children
        time.sleep(0.05)
    raise AssertionError("the two sleeps never started in session %d" % sid)


def test_stop_sweeps_the_orphans_of_a_dead_leader_but_only_those_with_our_venv(tmp_path) -> None:
    tree = InstallTree(str(tmp_path))
    # The leader dies like a SIGKILLed mpirun; its children live on in the session. One of
    # them runs without our venv in its environment: it is not ours to signal.
    proc = spawn_session(tree, "sleep 60 & env -u VIRTUAL_ENV sleep 61 & wait")
    record_of(tree, proc)
    children = _children_once_execed(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    foreign = [p for p in children if environ_value(p, "VIRTUAL_ENV") is None]
    assert len(children) == 2 and len(foreign) == 1
    try:
        assert stop_server(tree, grace=1.0) is True
        assert [p for p in children if alive(p)] == foreign
    finally:
        for p in foreign:
            os.kill(p, signal.SIGKILL)
