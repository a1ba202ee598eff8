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

A direct write returns only once the disk has the bytes, and the thread that called it waits
idle meanwhile. With `behind` (an apply with more than one job), each large file's full buffers
are written by a thread of its own while the caller hashes and fills the next one, so one
member's hashing and its writing overlap instead of taking turns.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import threading
from typing import Any, List, Optional, Tuple

__all__ = ["Direct", "DirectFile", "ALIGN", "DIRECT_MIN", "BUFFER", "buffer_for"]

ALIGN = 4096  # a multiple of every block size O_DIRECT asks for on Linux filesystems
DIRECT_MIN = 1024 * 1024  # smaller files go through the page cache
BUFFER = 1024 * 1024  # per file being written; a multiple of ALIGN
# Writes behind the caller use larger blocks (fewer hand-overs, and the disk takes 4 MiB writes
# faster than 1 MiB ones), within this much for all files at once.
BEHIND_TOTAL = 64 * 1024 * 1024
BEHIND_MAX = 4 * 1024 * 1024

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP))


class Direct:
    """Shared by one apply's writers: whether O_DIRECT is still on, and a pool of aligned buffers."""

    def __init__(self, enabled: bool = True, behind: bool = False, buffer: int = BUFFER) -> None:
        self.enabled = enabled and bool(_O_DIRECT)
        self.behind = behind
        self.buffer = buffer
        self._free: List[mmap.mmap] = []
        self._lock = threading.Lock()

    def refused(self) -> None:
        self.enabled = False

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.buffer)

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
                return DirectFile(self, fd, self.take(), self.behind)
        return DirectFile(self, os.open(path, flags, 0o644), None)


class DirectFile:
    """One file being written: `write` any bytes, then `end()` (pads, cuts back), then `fileno`/`close`."""

    def __init__(self, owner: Direct, fd: int, buf: Any, behind: bool = False) -> None:
        self.owner = owner
        self.fd = fd
        self.buf = buf  # None: plain writes through the page cache
        self.used = 0
        self.size = 0
        self.behind = behind and buf is not None
        self._writer: Optional[_Writer] = None

    def fileno(self) -> int:
        return self.fd

    def write(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self.buf is None:
            _write_all(self.fd, view)
            return
        while len(view):
            n = min(len(view), self.owner.buffer - self.used)
            self.buf[self.used:self.used + n] = view[:n]
            self.used += n
            view = view[n:]
            if self.used == self.owner.buffer:
                self._flush(self.used)
                self.used = 0

    def end(self) -> None:
        """Write what is buffered (the last block padded) and cut the file back to the bytes written."""
        if self.buf is None:
            return
        padded = -(-self.used // ALIGN) * ALIGN
        if self.used:
            self._flush(padded)
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.finish()  # every block on disk (or its error raised) before the file is cut back
        if padded != self.used:
            os.ftruncate(self.fd, self.size)
        self.used = 0
        self._release()

    def close(self) -> None:
        if self._writer is not None:  # abandoned: let the writer end before its file is closed
            writer, self._writer = self._writer, None
            writer.stop()
        self._release()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def _flush(self, length: int) -> None:
        if not self.behind:
            self._write_block(self.buf, length)
            return
        if self._writer is None:
            self._writer = _Writer(self)
        self._writer.put(self.buf, length)  # raises what an earlier block met
        self.buf = self.owner.take()

    def _write_block(self, buf: Any, length: int) -> None:
        with memoryview(buf) as whole, whole[:length] as view:
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


class _Writer:
    """The thread writing one file's full buffers in order: one written while the next is filled."""

    def __init__(self, file: DirectFile) -> None:
        self.file = file
        self.blocks: "queue.Queue[Optional[Tuple[Any, int]]]" = queue.Queue()
        # Two buffers per file, never more: the caller waits for the last block's write to end.
        self.free = threading.Semaphore(1)
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="direct-write", daemon=True)
        self.thread.start()

    def put(self, buf: Any, length: int) -> None:
        self.free.acquire()
        if self.error is not None:
            self.free.release()
            raise self.error
        self.blocks.put((buf, length))

    def finish(self) -> None:
        self.stop()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.blocks.put(None)
        self.thread.join()

    def _run(self) -> None:
        while True:
            got = self.blocks.get()
            if got is None:
                return
            buf, length = got
            try:
                if self.error is None:  # after an error the rest is only handed back
                    self.file._write_block(buf, length)
            except BaseException as exc:  # raised in the caller's thread at its next block or at end()
                self.error = exc
            finally:
                del got
                self.file.owner.give(buf)
                del buf
                self.free.release()


def buffer_for(jobs: int) -> int:
    """The block size of writes behind `jobs` workers: two buffers each within BEHIND_TOTAL."""
    share = BEHIND_TOTAL // (2 * max(1, jobs))
    return max(BUFFER, min(BEHIND_MAX, share - share % BUFFER))


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        done = os.write(fd, view)
        view = view[done:]
