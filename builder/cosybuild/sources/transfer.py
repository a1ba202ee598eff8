"""Resumable, verified downloads of hub files into the content-addressed cache.

The hub clients know how to reach a file (endpoint, mirror, token, redirects); this module
owns what they do not: a `.part` file per sha256 that survives restarts and is resumed
with a byte range, a sha256 computed over every byte we keep, and the rule that only
verified bytes enter the cache. Each source supplies a `Getter` that appends the bytes
from `sink.tell()` onward through its client library.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.progress import Reporter
from cosyinstall.streams import CHUNK

from cosybuild.cache import Cache
from cosybuild.fetch import FetchError
from cosybuild.parallel import Cancelled, credited, run_until_first_error, split_cached

__all__ = ["Want", "Sink", "Transient", "Getter", "download_verified", "download_unhashed", "git_blob_sha1"]


@dataclass(frozen=True)
class Want:
    """One pinned file: `label` names it in messages ("model/path"), `key` tells the getter what to fetch."""

    label: str
    key: str
    size: int
    sha256: str


class Transient(Exception):
    """A download attempt failed in a way worth retrying (network, 5xx, short body)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def git_blob_sha1(size: int) -> "hashlib._Hash":
    """A sha1 primed with git's blob header: fed the content, it gives the file's git oid."""
    sha1 = hashlib.sha1()
    sha1.update(b"blob %d\0" % size)
    return sha1


class _Progress:
    """One bar for a batch; `regress` when kept bytes are thrown away and must come again."""

    def __init__(self, reporter: Reporter, label: str, total: int) -> None:
        self.task = reporter.task(label, total)
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        self.task.advance(n)

    def regress(self, n: int) -> None:
        with self._lock:
            self.task.total += n


class Sink:
    """The file a download fills: every byte written is hashed and bounded by the pinned size.

    It offers the small file-like surface the hub clients use on their target (write, tell,
    and seek(0)+truncate() to start over when a server ignores the byte range).
    """

    def __init__(self, handle: io.BufferedRandom, size: int, label: str, progress: Optional[_Progress] = None,
                 cancel: Optional[threading.Event] = None, git_oid: bool = False) -> None:
        self.handle = handle
        self.size = size
        self.label = label
        self.progress = progress
        self.cancel = cancel
        self._git = git_oid
        self._seek_to: Optional[int] = None
        self._reset_hashers()
        self.have = 0

    def _reset_hashers(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha1 = git_blob_sha1(self.size) if self._git else None

    def load(self) -> int:
        """Hash what an earlier run left in the file, so the download continues after it."""
        self.handle.seek(0)
        while True:
            chunk = self.handle.read(CHUNK)
            if not chunk:
                break
            self._hash(chunk)
            self.have += len(chunk)
        if self.have > self.size:
            self.restart()
        return self.have

    def _hash(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)

    def write(self, data: bytes) -> int:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()
        if self.have + len(data) > self.size:
            raise ArtifactRejected("%s does not match the lock: the server sent more than the %d bytes it should have"
                                   % (self.label, self.size),
                                   "the hub serves different bytes; "
                                   "run cosybuild lock --only models --upgrade if that is expected")
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

    def flush(self) -> None:
        self.handle.flush()


# A getter appends the bytes of `want` from `sink.tell()` onward; Transient means "try again".
Getter = Callable[[Want, Sink], None]


# First pause after a failed attempt, in seconds; doubled per further failure. Tests set it to 0.
BACKOFF = 0.5


def _pause(failures: int, cancel: Optional[threading.Event]) -> None:
    delay = min(BACKOFF * 2 ** (failures - 1), 15.0)
    if cancel is not None:
        if cancel.wait(delay):
            raise Cancelled()
    elif delay:
        time.sleep(delay)


def _fill(want: Want, sink: Sink, get: Getter, retries: int) -> None:
    """Call the getter until the sink holds `size` bytes; `retries` consecutive failures without progress."""
    failures = 0
    while sink.have < want.size:
        if failures:
            _pause(failures, sink.cancel)
        before = sink.have
        try:
            get(want, sink)
        except Transient as exc:
            if sink.have > before:
                failures = 0  # the link works but is flaky: keep going from where it stopped
            failures += 1
            if failures > retries:
                raise FetchError("could not download %s after %d attempts: %s" % (want.label, failures, exc.reason),
                                 "check the network, proxy or HF_ENDPOINT / MODELSCOPE_ENDPOINT and run again; "
                                 "the partial download is kept and resumes") from None
            continue
        if sink.have < want.size and sink.have == before:
            failures += 1
            if failures > retries:
                raise FetchError("could not download %s: the server sent %d of %d bytes"
                                 % (want.label, sink.have, want.size), "run again to resume")


def _mismatch(want: Want, actual: str) -> ArtifactRejected:
    return ArtifactRejected("%s does not match the lock: sha256 %s, expected %s" % (want.label, actual, want.sha256),
                            "the hub serves different bytes under this name; "
                            "run cosybuild lock --only models --upgrade if the change is expected")


def _download_one(want: Want, get: Getter, cache: Cache, progress: _Progress, credited: int,
                  cancel: threading.Event, reporter: Reporter, retries: int) -> Path:
    announced = False
    while True:
        lock = cache.try_lock(want.sha256)
        if lock is not None:
            break
        if not announced:
            announced = True
            reporter.info("waiting for another cosybuild that is downloading %s" % want.label)
        if cancel.wait(0.2):
            raise Cancelled()
    with lock:
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
                sink = Sink(handle, want.size, want.label, progress, cancel)
                resumed = sink.load() > 0
                if resumed:
                    reporter.info("resuming %s at %d of %d bytes" % (want.label, sink.have, want.size))
                while True:
                    _fill(want, sink, get, retries)
                    actual = sink.sha256.hexdigest()
                    if actual == want.sha256:
                        break
                    if resumed and not clean_retry_done:
                        # The old part may be what is wrong; one download from zero decides.
                        clean_retry_done = True
                        sink.restart()
                        continue
                    raise _mismatch(want, actual)
                handle.flush()
        except ArtifactRejected:
            # Bytes that failed verification are never kept, not even as a part.
            part.unlink(missing_ok=True)
            raise
        except BaseException:
            try:
                if part.stat().st_size == 0:
                    part.unlink()
            except OSError:
                pass
            raise
        return cache.commit(part, want.sha256)


def download_verified(wants: Sequence[Want], get: Getter, cache: Cache, reporter: Reporter, label: str,
                      jobs: int = 4, retries: int = 3) -> Dict[str, Path]:
    """Make every wanted file present in the cache; returns sha256 -> cached path.

    Cached files cost nothing (no request at all); the rest are fetched `jobs` at a time,
    resumed from their .part, and verified before they enter the cache. The first error
    stops the others and is raised.
    """
    unique: Dict[str, Want] = {}
    for want in wants:
        unique.setdefault(want.sha256, want)
    result, todo = split_cached(unique.values(), cache)
    if not todo:
        return result
    have = credited(todo, cache)
    total = sum(w.size - have[w.sha256] for w in todo)
    # Bytes already kept in a part are re-hashed, not downloaded: the bar counts only the rest.
    progress = _Progress(reporter, "%s: downloading %d file%s" % (label, len(todo), "" if len(todo) == 1 else "s"), total)
    cancel = threading.Event()
    with progress.task:
        def work(want: Want) -> Path:
            return _download_one(want, get, cache, progress, have[want.sha256], cancel, reporter, retries)

        done, error = run_until_first_error(todo, work, jobs, "cosybuild-model", cancel)
        result.update(done)
    # Raised after the bar is closed, as a finished line.
    if error is not None:
        raise error
    return result


def download_unhashed(label: str, key: str, size: int, get: Getter, cache: Cache,
                      git_oid: Optional[str] = None, retries: int = 3) -> tuple[str, Path]:
    """Fetch a file whose sha256 the hub does not list (a small file kept in git), hash it, cache it.

    When the hub gives the git blob oid, the bytes are checked against it first. Returns
    (sha256, cached path). Such files are small, so an interrupted one simply starts over.
    """
    partial = cache.root / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="unhashed.", suffix=".part", dir=str(partial))
    tmp = Path(name)
    want = Want(label, key, size, "0" * 64)
    try:
        with os.fdopen(fd, "w+b") as handle:
            sink = Sink(handle, size, label, git_oid=git_oid is not None)
            _fill(want, sink, get, retries)
            handle.flush()
        if git_oid is not None and sink.sha1 is not None and sink.sha1.hexdigest() != git_oid.lower():
            raise ArtifactRejected("%s does not match the hub's listing: git oid %s, expected %s"
                                   % (label, sink.sha1.hexdigest(), git_oid),
                                   "the hub or a proxy altered the file; try again or use another endpoint")
        digest = sink.sha256.hexdigest()
        cached = cache.get(digest, size)
        if cached is not None:
            tmp.unlink()
            return digest, cached
        return digest, cache.commit(tmp, digest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
