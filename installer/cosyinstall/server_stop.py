"""Stopping the recorded server and everything it spawned: SIGTERM to its group, a sweep of its session, then SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, List, Optional

from cosyinstall.procs import forget_child, is_live, proc_stat, reap
from cosyinstall.server_log import log_marker
from cosyinstall.server_record import is_ours, members, read_record, remove_record
from cosyinstall.tree import InstallTree

__all__ = ["terminate", "stop_server"]

# SIGKILL cannot be ignored, but the kernel still needs a moment to tear processes down.
_SETTLE = 5.0


def _signal_all(pgid: Optional[int], pids: List[int], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass


def _group(record: Dict[str, Any], ours: bool) -> Optional[int]:
    """The launcher's process group to signal; never ours, never init's."""
    if not ours:
        return None
    pgid = int(record.get("pgid", record["pid"]))
    return None if pgid <= 1 or pgid == os.getpgid(0) else pgid


def _term_then_kill(record: Dict[str, Any], pgid: Optional[int], first: List[int], grace: float) -> List[int]:
    """SIGTERM, a second SIGTERM to stragglers half-way, SIGKILL at `grace`; what was left then."""
    pid = int(record["pid"])
    # mpirun forwards SIGTERM to the app it launched, so the group gets it first; the
    # app sits in its own process group (prterun makes one per rank), hence the session
    # sweep later. With no launcher left, the leftovers are told directly.
    _signal_all(pgid, first, signal.SIGTERM)
    deadline = time.monotonic() + grace
    swept = False
    while True:
        reap(pid)
        left = members(record)
        if not left:
            return left
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _signal_all(pgid, left, signal.SIGKILL)
            return left
        if not swept and remaining <= grace / 2:
            _signal_all(None, left, signal.SIGTERM)
            swept = True
        time.sleep(0.1)


def _settle(record: Dict[str, Any], seen: List[int]) -> None:
    """Wait until every process seen is gone, killing again whatever is still there."""
    pid = int(record["pid"])
    # Watched by pid, not only through `members`: a dying process may no longer show the
    # environment that `members` uses to recognise it.
    doomed = set(seen)
    settle = time.monotonic() + _SETTLE
    while time.monotonic() < settle:
        reap(pid)
        doomed = {p for p in doomed.union(members(record)) if is_live(proc_stat(p))}
        if not doomed:
            break
        _signal_all(None, sorted(doomed), signal.SIGKILL)
        time.sleep(0.05)
    if reap(pid) is not None:
        forget_child(pid)


def terminate(record: Dict[str, Any], grace: float) -> bool:
    """Stop the recorded server and everything in its session; whether anything ran."""
    pid = int(record["pid"])
    ours = is_ours(record)
    found = members(record)
    if not ours and not found:
        reap(pid)
        return False
    left = _term_then_kill(record, _group(record, ours), [] if ours else found, grace)
    _settle(record, left)
    return True


def stop_server(tree: InstallTree, grace: float = 10.0) -> bool:
    """Stop the server and all it spawned: SIGTERM, then SIGKILL after `grace` seconds.

    False when nothing of ours was running; the pid record is removed either way.
    """
    record = read_record(tree)
    if record is None:
        return False
    ran = terminate(record, grace)
    remove_record(tree, int(record["pid"]))
    if ran:
        log_marker(tree, "stopped the server (pid %d)" % record["pid"])
    return ran
