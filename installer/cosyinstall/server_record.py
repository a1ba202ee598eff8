"""The server's pid record (.cosyinstall/server.pid) and the checks that say which live processes are ours.

The record is what `start` knew when it launched: pid, process group, session, start time,
port, launcher, the venv every launched process inherits. A pid alone is never trusted:
pids are recycled, so ownership is decided from the start time, group, session and venv.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from cosyinstall.journal import read_json_object
from cosyinstall.procs import environ_value, is_live, proc_stat, session_processes
from cosyinstall.tree import InstallTree

__all__ = ["read_record", "write_record", "remove_record", "is_ours", "leftover_session", "members"]


def read_record(tree: InstallTree) -> Optional[Dict[str, Any]]:
    """The pid record's content, or None when there is none or it is unreadable."""
    try:
        data = read_json_object(tree.server_pid)  # bounded: a damaged record is no record
    except OSError:
        return None
    if data is None or not isinstance(data.get("pid"), int) or data["pid"] <= 1:
        return None
    return data


def write_record(tree: InstallTree, record: Dict[str, Any]) -> None:
    path = tree.server_pid
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    # A reader sees the old file or the new one, never half of one.
    os.replace(tmp, path)


def remove_record(tree: InstallTree, pid: Optional[int] = None) -> None:
    """Remove the record; with `pid`, only if it still names that pid (a newer start keeps its own)."""
    current = read_record(tree)
    if pid is not None and current is not None and current.get("pid") != pid:
        return
    try:
        os.unlink(tree.server_pid)
    except FileNotFoundError:
        pass


def is_ours(record: Dict[str, Any]) -> bool:
    """Whether the recorded pid is still the server we started, not a recycled pid."""
    pid = record["pid"]
    stat = proc_stat(pid)
    if not is_live(stat) or stat is None:
        return False
    if record.get("starttime") is not None and stat.starttime != record["starttime"]:
        return False
    return stat.pgrp == record.get("pgid", pid)


def leftover_session(record: Dict[str, Any]) -> Optional[int]:
    """The session id whose members are ours to stop, or None when nothing can be ours.

    While any process is in a session the kernel keeps its id allocated, so if the leader
    is gone the id cannot have been recycled and every member is a leftover of our server;
    a live leader with another start time is a recycled pid, and then nothing is ours.
    """
    pid = record["pid"]
    sid = record.get("sid", pid)
    if not isinstance(sid, int) or sid <= 1 or sid in (os.getsid(0), os.getpid()):
        return None
    stat = proc_stat(pid)
    if stat is not None and record.get("starttime") is not None and stat.starttime != record["starttime"]:
        return None
    return sid


def members(record: Dict[str, Any]) -> List[int]:
    """Live processes that belong to the recorded server: its whole session."""
    sid = leftover_session(record)
    if sid is None:
        return [int(record["pid"])] if is_ours(record) else []
    found = session_processes(sid)
    if not is_ours(record) and record.get("venv"):
        # With the leader gone, also ask for the environment every process we launch
        # inherits, so that no foreign process is ever signalled on the word of a pid file.
        found = [m for m in found if environ_value(m, "VIRTUAL_ENV") == record["venv"]]
    return found
