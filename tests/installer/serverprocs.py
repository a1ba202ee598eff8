"""Test helper: launch a plain shell script the way server_start does (new session, tracked, recorded).

No MPI here: these processes stand for a server only in how they are grouped, so the record,
stop and status modules can be tested on their own.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any, Dict, List

from cosyinstall.procs import is_live, proc_stat, session_processes, start_time, track_child
from cosyinstall.server_record import write_record
from cosyinstall.tree import InstallTree


def spawn_session(tree: InstallTree, script: str, track: bool = True) -> "subprocess.Popen[bytes]":
    """Run `sh -c script` as a session leader carrying the tree's venv, like a started server."""
    env = dict(os.environ, VIRTUAL_ENV=tree.venv)
    proc = subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    if track:
        track_child(proc)
    return proc


def record_of(tree: InstallTree, proc: "subprocess.Popen[bytes]", port: int = 6008, **changes: Any) -> Dict[str, Any]:
    """Write and return the pid record server_start would write for `proc`."""
    os.makedirs(tree.state, exist_ok=True)
    record: Dict[str, Any] = {
        "pid": proc.pid,
        "pgid": proc.pid,
        "sid": proc.pid,
        "starttime": start_time(proc.pid),
        "port": port,
        "argv": ["sh"],
        "started": time.time(),
        "launcher": "direct",
        "venv": tree.venv,
        "health_path": "/",
        "ready_log": "",
        "log_offset": 0,
        "ready": None,
    }
    record.update(changes)
    write_record(tree, record)
    return record


def wait_members(sid: int, count: int, timeout: float = 5.0) -> List[int]:
    """The session's live processes once there are at least `count` of them."""
    deadline = time.monotonic() + timeout
    found = session_processes(sid)
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = session_processes(sid)
    assert len(found) >= count, "only %d of %d processes started in session %d" % (len(found), count, sid)
    return found


def alive(pid: int) -> bool:
    return is_live(proc_stat(pid))
