"""The server's log (.cosyinstall/server.log): cosyinstall's marker lines in it, its tail, and following it."""

from __future__ import annotations

import os
import time
from typing import IO, Callable, List, Optional

from cosyinstall.health import LogTail
from cosyinstall.tree import InstallTree

__all__ = ["marker", "log_marker", "last_lines", "tail_log", "follow_log"]


def marker(text: str) -> bytes:
    """One line that tells cosyinstall's own notes apart from the server's output."""
    return ("==== cosyinstall %s: %s ====\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), text)).encode("utf-8")


def log_marker(tree: InstallTree, text: str) -> None:
    try:
        with open(tree.server_log, "ab") as fh:
            fh.write(marker(text))
    except OSError:
        # A note in the log never decides whether a stop or a failure report goes through.
        pass


def last_lines(path: str, lines: int, end: Optional[int] = None) -> List[str]:
    """The last `lines` lines of `path` before offset `end` (default: its end); [] without a file."""
    if lines <= 0:
        return []
    try:
        fh = open(path, "rb")
    except OSError:
        return []
    with fh:
        if end is None:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
        data = b""
        pos = end
        # Read backwards in blocks so a multi-gigabyte log costs no more than its tail.
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def tail_log(tree: InstallTree, lines: int = 50) -> List[str]:
    """The last `lines` lines of server.log, without line ends; [] when there is no log."""
    return last_lines(tree.server_log, lines)


def follow_log(
    tree: InstallTree,
    out: IO[str],
    lines: int = 10,
    poll: float = 0.5,
    stop: Optional[Callable[[], bool]] = None,
) -> None:
    """Print the last lines, then whatever is appended, until Ctrl-C (or `stop()` is true)."""
    path = tree.server_log
    try:
        try:
            start = os.path.getsize(path)
        except OSError:
            start = 0
        # Both halves cut at the same offset: no line is lost or shown twice between them.
        for line in last_lines(path, lines, start):
            out.write(line + "\n")
        out.flush()
        tail = LogTail(path, start)
        while stop is None or not stop():
            text = tail.read_new()
            if text:
                out.write(text)
                out.flush()
            else:
                time.sleep(poll)
    except KeyboardInterrupt:
        pass
