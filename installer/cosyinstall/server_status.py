"""What `status` reports: whether the recorded server runs, answers its health URL, and what is left of a dead one."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

from cosyinstall.artifact import ServerSpec
from cosyinstall.health import http_status
from cosyinstall.server_record import is_ours, members, read_record
from cosyinstall.tree import InstallTree

__all__ = ["server_status"]


def server_status(tree: InstallTree, spec: Optional[ServerSpec] = None) -> Dict[str, Any]:
    """running, ready (health checked now), pid, port, uptime (s), log path, and more.

    `stale_pid_file` says a pid record names a server that is gone; `leftovers` lists pids of
    its session still alive, which `stop_server` (or the next start) cleans up.
    """
    record = read_record(tree)
    status: Dict[str, Any] = {
        "running": False,
        "ready": False,
        "pid": None,
        "port": spec.port if spec is not None else None,
        "uptime": None,
        "log": tree.server_log,
        "launcher": None,
        "url": None,
        "http_status": None,
        "stale_pid_file": False,
        "leftovers": [],
    }
    if record is None:
        return status
    port = record.get("port", status["port"])
    status["port"] = port
    if not is_ours(record):
        status["stale_pid_file"] = True
        # The launcher is gone but what it spawned may still run (and hold the port).
        status["leftovers"] = members(record)
        return status
    status.update(
        running=True,
        pid=record["pid"],
        launcher=record.get("launcher"),
        uptime=max(time.time() - float(record.get("started", time.time())), 0.0),
    )
    if isinstance(port, int):
        health = record.get("health_path") or (spec.health_path if spec is not None else "/")
        status["url"] = "http://127.0.0.1:%d%s" % (port, health)
        code = http_status(port, health)
        status["http_status"] = code
        status["ready"] = code is not None and 200 <= code < 300
    return status
