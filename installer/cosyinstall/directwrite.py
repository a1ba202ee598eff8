"""Writing a large staged file past the page cache (O_DIRECT), where the filesystem allows it.

An apply writes each large member once and reads it back at most once, by uv (which unpacks a
wheel into its cache) or never (a model file, until the server loads it). Written through the
page cache, each of those gigabytes takes fresh pages, a copy into them and a later writeback,
all kernel time on the cores uv needs; on the 3.4 GB packages set that was most of what the
apply added to uv's own work. Written with O_DIRECT, the bytes go from one reused,
page-aligned buffer to the disk.

O_DIRECT wants the buffer, the file offset and the length aligned to the device's block: the
buffer is an anonymous mmap (page-aligned), every write but the last is a whole number of
ALIGN-byte blocks, and the last block is written padded and the file cut back to its size.
A filesystem that refuses O_DIRECT (tmpfs before Linux 6.6, some network and FUSE filesystems)
gets the same bytes through the page cache: the first refusal turns direct writes off for the
rest of the apply (`Direct.enabled`). Small files always go through the page cache, where a
direct write's wait on the disk would cost more than it saves.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from typing import Any, List

__all__ = ["Direct", "DirectFile", "ALIGN", "DIRECT_MIN", "BUFFER"]

ALIGN = 4096  # a multiple of every block size O_DIRECT asks for on Linux filesystems
DIRECT_MIN = 1024 * 1024  # smaller files go through the page cache
BUFFER = 1024 * 1024  # per file being written; a multiple of ALIGN

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP))


class Direct:
    """Shared by one apply's writers: whether O_DIRECT is still on, and a pool of aligned buffers."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and bool(_O_DIRECT)
        self._free: List[mmap.mmap] = []
        self._lock = threading.Lock()

    def refused(self) -> None:
        self.enabled = False

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, BUFFER)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buf)

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for buf in free:
            try:
                buf.close()
            except BufferError:
                pass  # a view still held by a failed write's traceback: unmapped when that goes

    def open(self, path: str, size: int) -> "DirectFile":
        """A new file at `path` (truncated) for `size` bytes; direct when large and still permitted."""
        # Never through a link planted in the staging folder (issue 12: links are never followed).
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        if self.enabled and size >= DIRECT_MIN:
            try:
                fd = os.open(path, flags | _O_DIRECT, 0o644)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                self.refused()
            else:
                return DirectFile(self, fd, self.take())
        return DirectFile(self, os.open(path, flags, 0o644), None)


class DirectFile:
    """One file being written: `write` any bytes, then `end()` (pads, cuts back), then `fileno`/`close`."""

    def __init__(self, owner: Direct, fd: int, buf: Any) -> None:
        self.owner = owner
        self.fd = fd
        self.buf = buf  # None: plain writes through the page cache
        self.used = 0
        self.size = 0

    def fileno(self) -> int:
        return self.fd

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self.buf is None:
            _write_all(self.fd, view)
            return
        while len(view):
            n = min(len(view), BUFFER - self.used)
            self.buf[self.used:self.used + n] = view[:n]
            self.used += n
            view = view[n:]
            if self.used == BUFFER:
                self._flush(BUFFER)
                self.used = 0

    def end(self) -> None:
        """Write what is buffered (the last block padded) and cut the file back to the bytes written."""
        if self.buf is None:
            return
        if self.used:
            padded = -(-self.used // ALIGN) * ALIGN
            self._flush(padded)
            if padded != self.used:
                os.ftruncate(self.fd, self.size)
            self.used = 0
        self._release()

    def close(self) -> None:
        self._release()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def _flush(self, length: int) -> None:
        with memoryview(self.buf) as whole, whole[:length] as view:
            try:
                done = os.write(self.fd, view)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                # Opened direct, refused at the write (an alignment this device does not accept):
                # the rest of this file, and every later one, through the page cache.
                self.owner.refused()
                done = 0
            if done != length:
                self._plain()
                with view[done:] as rest:
                    _write_all(self.fd, rest)

    def _plain(self) -> None:
        import fcntl  # Linux only, like O_DIRECT itself

        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~_O_DIRECT)

    def _release(self) -> None:
        if self.buf is not None:
            buf, self.buf = self.buf, None
            self.owner.give(buf)


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        done = os.write(fd, view)
        view = view[done:]
