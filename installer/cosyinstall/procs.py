"""Process facts read from /proc (state, session, start time, environment, command line) and the children we started."""

from __future__ import annotations

import os
import subprocess
from typing import Dict, List, NamedTuple, Optional

__all__ = [
    "ProcStat",
    "proc_stat",
    "is_live",
    "start_time",
    "all_pids",
    "session_processes",
    "session_cpu_ticks",
    "environ_value",
    "proc_cmdline",
    "track_child",
    "is_child",
    "reap",
    "forget_child",
]


class ProcStat(NamedTuple):
    """The fields of /proc/<pid>/stat that tell what a process is and whether it is ours."""

    state: str
    pgrp: int
    session: int
    # In clock ticks since boot: with the pid it names one process, as pids are recycled.
    starttime: int


# Popen objects of servers this process started: only a parent can collect an exit status,
# and only a parent can reap its child so that it does not linger as a zombie.
_children: Dict[int, "subprocess.Popen[bytes]"] = {}


def proc_stat(pid: int) -> Optional[ProcStat]:
    """State, process group, session and start time of a process, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name sits in parentheses and may itself hold spaces or ')'.
    fields = raw.rsplit(")", 1)[-1].split()
    try:
        return ProcStat(fields[0], int(fields[2]), int(fields[3]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def is_live(stat: Optional[ProcStat]) -> bool:
    """Whether a process exists and runs: a zombie or a dying one no longer counts."""
    return stat is not None and stat.state not in ("Z", "X", "x")


def start_time(pid: int) -> Optional[int]:
    """The start time of a process in clock ticks since boot, or None when it does not exist."""
    stat = proc_stat(pid)
    return stat.starttime if stat is not None else None


def all_pids() -> List[int]:
    """Pids of every process visible in /proc, ascending; [] when /proc cannot be read."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def session_processes(sid: int) -> List[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    found = []
    for pid in all_pids():
        stat = proc_stat(pid)
        if is_live(stat) and stat is not None and stat.session == sid:
            found.append(pid)
    return found


def _cpu_ticks(pid: int) -> int:
    """utime+stime of a process and of its reaped children, in clock ticks; 0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[-1].split()
        return sum(int(f) for f in fields[11:15])
    except (OSError, ValueError, IndexError):
        return 0


def session_cpu_ticks(sid: int) -> int:
    """CPU time used so far by every live process of a session (an engine build shows here while its log is silent)."""
    return sum(_cpu_ticks(pid) for pid in session_processes(sid))


def environ_value(pid: int, name: str) -> Optional[str]:
    """The value of one environment variable a process started with, or None when unset or unreadable."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "replace")
    return None


def proc_cmdline(pid: int) -> str:
    """The command line of a process as one string, or "" when it cannot be read."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as fh:
            raw = fh.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def track_child(proc: "subprocess.Popen[bytes]") -> None:
    """Keep a child we started, so that its exit status can be read and it can be reaped."""
    _children[proc.pid] = proc


def is_child(pid: int) -> bool:
    """Whether `pid` is a child this process started and still tracks."""
    return pid in _children


def reap(pid: int) -> Optional[int]:
    """The exit status of our child `pid`, reaping it; None while it runs or when it is not ours."""
    proc = _children.get(pid)
    if proc is None:
        return None
    return proc.poll()


def forget_child(pid: int) -> None:
    """Stop tracking a child once its exit status is no longer wanted."""
    _children.pop(pid, None)
