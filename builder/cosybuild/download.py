"""The download engine: pinned files into the content-addressed cache, in parallel, resumable, verified.

A transport (the package index, Hugging Face, ModelScope) knows how to reach a file
(URL, endpoint, mirror, token, redirects); this module owns everything else: a `.part`
per sha256 that survives restarts and is resumed with a byte range, a sha256 over every
byte kept, retries with backoff on transient failures, one progress bar per batch, the
rule that only verified bytes enter the cache, and first-error-wins cancellation.
A transport supplies `get(want, sink)`, which appends the bytes from `sink.tell()` onward.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.progress import Reporter, Task
from cosyinstall.streams import CHUNK

from cosybuild.cache import Cache, CacheLock
from cosybuild.transfererror import TransferError, Transient

__all__ = ["Want", "Sink", "Getter", "Transport", "Cancelled", "download_verified", "download_unhashed",
           "git_blob_sha1"]

# First pause after a failed attempt, in seconds; doubled per further failure. Tests set it to 0.
BACKOFF = 0.5
MAX_BACKOFF = 30.0


class Cancelled(Exception):
    """Another file failed (or the user interrupted): stop quietly and keep the .part."""


@dataclass(frozen=True)
class Want:
    """One pinned file: `label` names it in messages, `key` tells the transport what to fetch."""

    label: str
    key: str
    size: int
    sha256: str


def git_blob_sha1(size: int) -> "hashlib._Hash":
    """A sha1 primed with git's blob header: fed the content, it gives the file's git oid."""
    sha1 = hashlib.sha1()
    sha1.update(b"blob %d\0" % size)
    return sha1


class _Progress:
    """The batch's bar; `regress` when kept bytes are thrown away and must come again."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        self.task.advance(n)

    def regress(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.task.total += n


class Sink:
    """The file a download fills: every byte written is hashed and bounded by the pinned size.

    It offers the small file-like surface the hub clients use on their target (write, tell,
    and seek(0)+truncate() to start over when a server ignores the byte range).
    """

    def __init__(self, handle: io.BufferedRandom, size: int, label: str, relock_hint: str = "",
                 progress: Optional[_Progress] = None, cancel: Optional[threading.Event] = None,
                 git_oid: bool = False) -> None:
        self.handle = handle
        self.size = size
        self.label = label
        self.relock_hint = relock_hint
        self.progress = progress
        self.cancel = cancel
        self._git = git_oid
        self._seek_to: Optional[int] = None
        self._reset_hashers()
        self.have = 0
        # True when the file holds bytes of more than one response (an earlier run or attempt):
        # a mismatch then may be the old bytes' fault, not the server's.
        self.resumed = False

    def _reset_hashers(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = git_blob_sha1(self.size) if self._git else None

    def load(self) -> int:
        """Hash what an earlier run left in the file, so the download continues after it."""
        self.handle.seek(0)
        while self.have <= self.size:
            chunk = self.handle.read(CHUNK)
            if not chunk:
                break
            self._hash(chunk)
            self.have += len(chunk)
        if self.have > self.size:
            self.restart()
        self.resumed = self.have > 0
        return self.have

    def _hash(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)

    def _rejected(self, what: str) -> ArtifactRejected:
        return ArtifactRejected("%s does not match the lock: %s" % (self.label, what), self.relock_hint)

    def check_total(self, total: int) -> None:
        """Refuse before any byte is kept when the server announces a size other than the lock's."""
        if total != self.size:
            raise self._rejected("the server has %d bytes, the lock says %d" % (total, self.size))

    def write(self, data: bytes) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        if self.have + len(data) > self.size:
            raise self._rejected("the server sent more than the %d bytes the lock says" % self.size)
        try:
            self.handle.write(data)
        except OSError as exc:
            raise EnvironmentUnsuitable("cannot write %s while downloading %s: %s"
                                        % (self.handle.name, self.label, exc.strerror or exc),
                                        "free disk space or point COSYBUILD_CACHE at a larger disk") from None
        self._hash(data)
        self.have += len(data)
        if self.progress is not None:
            self.progress.advance(len(data))
        return len(data)

    def tell(self) -> int:
        return self.have

    def seek(self, pos: int, whence: int = 0) -> int:
        # Only "go back to the start" and "stay at the end" keep the running hash meaningful.
        if whence != 0 or pos not in (0, self.have):
            raise io.UnsupportedOperation("a download can only restart from zero")
        self._seek_to = pos
        return pos

    def truncate(self, pos: Optional[int] = None) -> int:
        target = self._seek_to if pos is None else pos
        if target is None or target == self.have:
            return self.have
        if target != 0:
            raise io.UnsupportedOperation("a download can only restart from zero")
        self.restart()
        return 0

    def restart(self) -> None:
        """Throw away what was kept: the server sends the whole file again."""
        if self.progress is not None:
            self.progress.regress(min(self.have, self.size))
        self.handle.seek(0)
        self.handle.truncate(0)
        self._reset_hashers()
        self.have = 0
        self._seek_to = None
        self.resumed = False

    def flush(self) -> None:
        self.handle.flush()


# Appends the bytes of `want` from `sink.tell()` onward; raises Transient for "try again".
Getter = Callable[[Want, Sink], None]


@dataclass(frozen=True)
class Transport:
    """One kind of server as the engine sees it: how to get bytes, and what to tell the user."""

    get: Getter
    # Said when retries run out ("check the network or proxy and run again").
    retry_hint: str
    # Said when the bytes differ from the lock ("... run cosybuild lock again if that is expected").
    relock_hint: str
    # " from <host>" for a message about `want`, or "".
    where: Callable[[Want], str] = lambda want: ""


def _pause(failures: int, retry_after: Optional[float], cancel: threading.Event) -> None:
    delay = BACKOFF * (2 ** (failures - 1)) * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if cancel.wait(min(delay, MAX_BACKOFF)):
        raise Cancelled()


def _fill(want: Want, sink: Sink, transport: Transport, retries: int, cancel: threading.Event) -> None:
    """Call the transport until the sink holds `size` bytes; `retries` consecutive failures without progress."""
    failures = 0
    retry_after: Optional[float] = None
    while sink.have < want.size:
        if cancel.is_set():
            raise Cancelled()
        if failures:
            _pause(failures, retry_after, cancel)
        before = sink.have
        if before:
            sink.resumed = True
        try:
            transport.get(want, sink)
            retry_after = None
        except Transient as exc:
            if sink.have > before:
                failures = 0  # the link works but is flaky: keep going from where it stopped
            failures += 1
            retry_after = exc.retry_after
            if failures > retries:
                raise TransferError("could not download %s%s after %d attempts: %s"
                                    % (want.label, transport.where(want), failures, exc.reason),
                                    transport.retry_hint
                                    + ("; the partial download is kept and resumes" if sink.have else "")) from None
            continue
        if sink.have < want.size and sink.have == before:
            failures += 1
            if failures > retries:
                raise TransferError("could not download %s%s: the server sent %d of %d bytes"
                                    % (want.label, transport.where(want), sink.have, want.size), "run again to resume")


def _locked(want: Want, cache: Cache, cancel: threading.Event, reporter: Reporter) -> CacheLock:
    announced = False
    while True:
        lock = cache.try_lock(want.sha256)
        if lock is not None:
            return lock
        if not announced:
            announced = True
            reporter.info("waiting for another cosybuild that is downloading %s" % want.label)
        if cancel.wait(0.2):
            raise Cancelled()


def _download_one(want: Want, transport: Transport, cache: Cache, progress: _Progress, credited: int,
                  cancel: threading.Event, reporter: Reporter, retries: int) -> Path:
    with _locked(want, cache, cancel, reporter):
        hit = cache.get(want.sha256, want.size)
        if hit is not None:
            # Another process finished it while we waited for the lock.
            progress.advance(want.size - credited)
            return hit
        part = cache.partial_path(want.sha256)
        clean_retry_done = False
        try:
            # "a+b": never truncates what an earlier run kept; every write lands at the end.
            with open(part, "a+b") as handle:
                sink = Sink(handle, want.size, want.label, transport.relock_hint, progress, cancel)
                if sink.load():
                    reporter.info("resuming %s at %d of %d bytes" % (want.label, sink.have, want.size))
                while True:
                    _fill(want, sink, transport, retries, cancel)
                    actual = sink.sha256.hexdigest()
                    if actual == want.sha256:
                        break
                    if sink.resumed and not clean_retry_done:
                        # The old bytes may be what is wrong; one download from zero decides.
                        clean_retry_done = True
                        sink.restart()
                        continue
                    raise ArtifactRejected("%s does not match the lock: sha256 %s, expected %s"
                                           % (want.label, actual, want.sha256), transport.relock_hint)
                handle.flush()
        except ArtifactRejected:
            # Bytes that failed verification are never kept, not even as a part.
            part.unlink(missing_ok=True)
            raise
        except BaseException:
            # Keep a part worth resuming; an empty one is only litter.
            try:
                if part.stat().st_size == 0:
                    part.unlink()
            except OSError:
                pass
            raise
        # Committed after close: Windows cannot replace a file that is still open.
        return cache.commit(part, want.sha256)


def _unique(wants: Sequence[Want]) -> List[Want]:
    unique: Dict[str, Want] = {}
    for want in wants:
        digest = want.sha256.lower()
        seen = unique.get(digest)
        if seen is None:
            unique[digest] = Want(want.label, want.key, want.size, digest)
        elif seen.size != want.size:
            raise ArtifactRejected("the lock gives sha256 %s two sizes, %d for %s and %d for %s"
                                   % (digest, seen.size, seen.label, want.size, want.label))
    return list(unique.values())


def _split_cached(wants: Sequence[Want], cache: Cache) -> Tuple[Dict[str, Path], List[Want]]:
    hits: Dict[str, Path] = {}
    todo: List[Want] = []
    for want in wants:
        hit = cache.get(want.sha256, want.size)
        if hit is not None:
            hits[want.sha256] = hit
        else:
            todo.append(want)
    return hits, todo


def _credited(todo: Sequence[Want], cache: Cache) -> Dict[str, int]:
    """sha256 -> bytes an earlier run left in its .part (re-hashed, not downloaded), capped at the size."""
    have: Dict[str, int] = {}
    for want in todo:
        try:
            size = cache.partial_path(want.sha256).stat().st_size
        except OSError:
            size = 0
        have[want.sha256] = min(size, want.size)
    return have


def _run_until_first_error(todo: Sequence[Want], work: Callable[[Want], Path], jobs: int,
                           cancel: threading.Event) -> Tuple[Dict[str, Path], Optional[BaseException]]:
    """Run `work` on every want in up to `jobs` threads; (sha256 -> result, first error).

    The first error sets `cancel`: queued wants never start and running ones raise Cancelled
    at their next chunk. The error is returned once every thread has stopped.
    """
    errors: List[BaseException] = []
    errors_lock = threading.Lock()

    def guarded(want: Want) -> Path:
        try:
            if cancel.is_set():
                raise Cancelled()
            return work(want)
        except Cancelled:
            raise  # a consequence of the first error, not an error of its own
        except BaseException as exc:
            with errors_lock:
                errors.append(exc)
            # Set before this thread takes the next want, so queued ones never start.
            cancel.set()
            raise

    done: Dict[str, Path] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo))), thread_name_prefix="cosybuild-download")
    try:
        futures = {pool.submit(guarded, want): want for want in todo}
        for future in as_completed(futures):
            if future.exception() is None:
                done[futures[future].sha256] = future.result()
            elif errors:
                break
    finally:
        # Also reached on KeyboardInterrupt: running downloads stop at their next chunk
        # and keep their .part for the next run.
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
    return done, (errors[0] if errors else None)


def download_verified(wants: Sequence[Want], transport: Transport, cache: Cache, reporter: Reporter,
                      of: str = "", jobs: int = 8, retries: int = 3) -> Dict[str, Path]:
    """Make every wanted file present in the cache; returns sha256 -> cached path.

    Cached files cost nothing (no request at all); the rest are fetched `jobs` at a time,
    resumed from their .part, and verified before they enter the cache. `retries` counts
    consecutive failed attempts that made no progress. The first error stops the others and
    is raised. `of` names the batch on the progress bar ("model m").
    """
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    result, todo = _split_cached(_unique(wants), cache)
    if not todo:
        return result
    # Bytes already in a .part count as done, so the bar and ETA reflect the real remaining work.
    have = _credited(todo, cache)
    total = sum(w.size - have[w.sha256] for w in todo)
    label = "Downloading %d file%s" % (len(todo), "" if len(todo) == 1 else "s")
    if of:
        label += " of " + of
    if result:
        label += " (%d cached)" % len(result)
    cancel = threading.Event()
    with reporter.task(label, total) as task:
        progress = _Progress(task)

        def work(want: Want) -> Path:
            return _download_one(want, transport, cache, progress, have[want.sha256], cancel, reporter, retries)

        done, error = _run_until_first_error(todo, work, jobs, cancel)
        result.update(done)
        if error is not None:
            raise error
    return result


def download_unhashed(want: Want, transport: Transport, cache: Cache, git_oid: Optional[str] = None,
                      retries: int = 3) -> Tuple[str, Path]:
    """Fetch a file whose sha256 the server does not list (a small file kept in git), hash it, cache it.

    `want.sha256` is ignored. When the hub gives the git blob oid, the bytes are checked
    against it first. Returns (sha256, cached path). Such files are small, so an interrupted
    one simply starts over.
    """
    partial = cache.root / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="unhashed.", suffix=".part", dir=str(partial))
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w+b") as handle:
            sink = Sink(handle, want.size, want.label, transport.relock_hint, git_oid=git_oid is not None)
            _fill(want, sink, transport, retries, threading.Event())
            handle.flush()
        if git_oid is not None and sink.sha1 is not None and sink.sha1.hexdigest() != git_oid.lower():
            raise ArtifactRejected("%s does not match the hub's listing: git oid %s, expected %s"
                                   % (want.label, sink.sha1.hexdigest(), git_oid),
                                   "the hub or a proxy altered the file; try again or use another endpoint")
        digest = sink.sha256.hexdigest()
        cached = cache.get(digest, want.size)
        if cached is not None:
            tmp.unlink()
            return digest, cached
        return digest, cache.commit(tmp, digest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
