"""Probes of a running server: its log tail, its TCP port, its health URL, and who holds a port."""

from __future__ import annotations

import codecs
import errno
import http.client
import os
import socket
import urllib.error
import urllib.request
from typing import List, Optional, Set, Tuple

# proc_cmdline lives in procs; it stays importable from here, where it used to be.
from cosyinstall.procs import all_pids, proc_cmdline

__all__ = [
    "LogTail",
    "port_open",
    "http_status",
    "port_in_use",
    "port_holders",
    "who_holds_port",
    "proc_cmdline",
]

_READ_LIMIT = 4 * 1024 * 1024
_TCP_LISTEN = "0A"

# Proxy variables (http_proxy, all_proxy...) are common on these boxes and would send a
# request for 127.0.0.1 to the proxy; an empty ProxyHandler turns them all off.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LogTail:
    """Reads what was appended to a file since the last call, as text."""

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read_new(self, limit: int = _READ_LIMIT) -> str:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if size < self.offset:
                    # Truncated or replaced under us: start again from its beginning.
                    self.offset = 0
                    self._decoder.reset()
                if size == self.offset:
                    return ""
                fh.seek(self.offset)
                data = fh.read(min(size - self.offset, limit))
        except OSError:
            return ""
        self.offset += len(data)
        # The incremental decoder holds back a character cut in half between two reads.
        return self._decoder.decode(data)


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(port: int, path: str = "/", timeout: float = 3.0, host: str = "127.0.0.1") -> Optional[int]:
    """The HTTP status of GET http://host:port/path, or None when nothing answered HTTP."""
    url = "http://%s:%d%s" % (host, port, path)
    request = urllib.request.Request(url, headers={"User-Agent": "cosyinstall-health"})
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError, http.client.HTTPException):
        # A half-started server may reset, hang up, or speak garbage: all mean "not yet".
        return None


def port_in_use(port: int) -> bool:
    """Whether a server could not listen on 0.0.0.0:port because something already does."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR so that sockets of a server just stopped (TIME_WAIT) do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("0.0.0.0", port))
        return False
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return True
        # Cannot tell by binding (a privileged port, say): fall back to knocking.
        return port_open(port)
    finally:
        probe.close()


def _listening_inodes(port: int) -> Set[str]:
    inodes: Set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def port_holders(port: int) -> List[Tuple[int, str]]:
    """(pid, command line) of every process with a socket listening on the port; best effort."""
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    wanted = {"socket:[%s]" % i for i in inodes}
    found: List[Tuple[int, str]] = []
    for pid in all_pids():
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in wanted:
                found.append((pid, proc_cmdline(pid)))
                break
    return found


def who_holds_port(port: int) -> Optional[str]:
    """A phrase like "pid 42 (python -m http.server 6008)" naming the holder, or None."""
    holders = port_holders(port)
    if not holders:
        return None
    pid, cmd = holders[0]
    if len(cmd) > 120:
        cmd = cmd[:117] + "..."
    text = "pid %d (%s)" % (pid, cmd) if cmd else "pid %d" % pid
    if len(holders) > 1:
        text += " and %d other process%s" % (len(holders) - 1, "" if len(holders) == 2 else "es")
    return text
