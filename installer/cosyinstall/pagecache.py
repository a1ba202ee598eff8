"""Letting go of the page cache an apply has no further use for: the upload behind its one read,
and each wheel once uv has unpacked it.

An apply moves more bytes than most boxes cache comfortably (a 3.6 GB upload, 3.4 GB of wheels,
6.9 GB unpacked). Left cached, the upload and the wheels push out what the box will need next
(the venv's own files, the models the server loads) and, on a VM that hands free memory back to
its host, make every later allocation a fresh page that the host must first supply; dropped as
soon as they are consumed, their pages are reused at once by what is written next. Advice only:
where the kernel or filesystem ignores it, nothing changes but the cache.
"""

from __future__ import annotations

import os

__all__ = ["Behind", "forget_file", "FORGET_EVERY"]

# The upload's pages are let go of behind the read this many bytes at a time.
FORGET_EVERY = 64 * 1024 * 1024

_ADVISE = getattr(os, "posix_fadvise", None)
_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", 0)


class Behind:
    """Drops a file's cached pages behind a sequential read of it (`upto(pos)`), in FORGET_EVERY steps."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = 0
        self.advise = _ADVISE

    def upto(self, pos: int, final: bool = False) -> None:
        if self.advise is None or (pos - self.done < FORGET_EVERY and not final) or pos <= self.done:
            return
        try:
            self.advise(self.fd, self.done, pos - self.done, _DONTNEED)
        except OSError:
            self.advise = None  # a filesystem that refuses the advice keeps its cache
        self.done = pos


def forget_file(path: str) -> None:
    """Drop the clean cached pages of a whole file nothing in this apply reads again."""
    if _ADVISE is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        _ADVISE(fd, 0, 0, _DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
