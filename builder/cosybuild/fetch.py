"""Parallel, resumable, verified download of locked files into the content-addressed cache."""

from __future__ import annotations

import hashlib
import http.client
import random
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, Optional, Sequence

from cosyinstall.errors import ArtifactRejected, CosyError, EnvironmentUnsuitable
from cosyinstall.progress import Reporter, Task
from cosyinstall.streams import CHUNK

from .cache import Cache, CacheLock
from .parallel import Cancelled, credited, run_until_first_error, split_cached

__all__ = ["FetchItem", "FetchError", "fetch_all"]

# Seconds of socket silence before an attempt counts as failed (then it is retried).
TIMEOUT = 60.0
# First retry delay in seconds; doubles per consecutive failure. Tests set it to 0.
BACKOFF = 0.5
MAX_BACKOFF = 30.0
USER_AGENT = "cosybuild/0.1 (urllib)"

# Statuses that say "try again later" rather than "this will never work".
_RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


class FetchError(CosyError):
    """A locked file could not be downloaded (HTTP error or network failure after retries)."""

    exit_code = 3


@dataclass(frozen=True)
class FetchItem:
    """One locked file and the URL it was found at for this run."""

    filename: str
    size: int
    sha256: str
    url: str


class _Transient(Exception):
    """An attempt failed in a way worth retrying; `reason` ends up in FetchError."""

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Progress:
    """One aggregate bar for the whole run; `grow` when a resume is lost and bytes come again."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        self.task.advance(n)

    def grow(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.task.total += n


def fetch_all(
    items: Sequence[FetchItem],
    cache: Cache,
    reporter: Reporter,
    jobs: int = 8,
    retries: int = 3,
) -> Dict[str, Path]:
    """Make every item present in `cache`; return sha256 -> cached path.

    Cached items cost nothing; the rest download in `jobs` threads, resume from `.part`
    files, and are verified before they enter the cache. `retries` counts consecutive
    failed attempts that made no progress. The first error cancels the rest and is raised.
    """
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    unique: Dict[str, FetchItem] = {}
    for item in items:
        digest = item.sha256.lower()
        seen = unique.get(digest)
        if seen is None:
            unique[digest] = FetchItem(item.filename, item.size, digest, item.url)
        elif seen.size != item.size:
            raise ArtifactRejected(
                "the lock gives sha256 %s two sizes, %d for %s and %d for %s"
                % (digest, seen.size, seen.filename, item.size, item.filename)
            )

    result, todo = split_cached(unique.values(), cache)
    if not todo:
        return result

    # Bytes already in a .part count as done, so the bar and ETA reflect real remaining work.
    have = credited(todo, cache)
    total = sum(item.size - have[item.sha256] for item in todo)

    # Built per run so ProxyHandler reads the *_proxy / no_proxy variables as they are now.
    opener = urllib.request.build_opener()
    cancel = threading.Event()

    label = "Downloading %d file%s" % (len(todo), "" if len(todo) == 1 else "s")
    if result:
        label += " (%d cached)" % len(result)
    with reporter.task(label, total) as task:
        progress = _Progress(task)

        def work(item: FetchItem) -> Path:
            return _Job(item, cache, opener, progress, reporter, cancel, retries).run(have[item.sha256])

        done, error = run_until_first_error(todo, work, jobs, "cosybuild-fetch", cancel)
        result.update(done)
        if error is not None:
            raise error
    return result


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return "a local path"
    # hostname/port only: the netloc may carry credentials, which must not reach a message.
    host = parts.hostname or "?"
    return "%s:%d" % (host, parts.port) if parts.port else host


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        return str(inner) if not isinstance(inner, BaseException) else _reason(inner)
    if isinstance(exc, TimeoutError):
        return "timed out after %d s without data" % TIMEOUT
    text = str(exc) or type(exc).__name__
    return text


class _Job:
    """Downloads one item into its .part, verifies it and commits it to the cache."""

    def __init__(
        self,
        item: FetchItem,
        cache: Cache,
        opener: urllib.request.OpenerDirector,
        progress: _Progress,
        reporter: Reporter,
        cancel: threading.Event,
        retries: int,
    ) -> None:
        self.item = item
        self.cache = cache
        self.opener = opener
        self.progress = progress
        self.reporter = reporter
        self.cancel = cancel
        self.retries = retries
        self.part = cache.partial_path(item.sha256)
        self.hasher = hashlib.sha256()
        self.have = 0
        # True when the .part holds bytes from more than one response (an earlier process or
        # attempt); a mismatch then may be the stale part's fault, not the server's.
        self.resumed = False

    def run(self, credited: int) -> Path:
        with self._acquire():
            hit = self.cache.get(self.item.sha256, self.item.size)
            if hit is not None:
                # Another process finished it while we waited for the lock.
                self.progress.advance(self.item.size - credited)
                return hit
            try:
                # "ab+" never truncates an existing .part, and every write lands at its end.
                with open(self.part, "ab+") as out:
                    self._load(out)
                    self._download(out)
            except ArtifactRejected:
                # Bytes that failed verification never stay in the cache, not even as a .part.
                self.part.unlink(missing_ok=True)
                raise
            except BaseException:
                # Keep a .part worth resuming; an empty one is only litter.
                try:
                    if self.part.stat().st_size == 0:
                        self.part.unlink()
                except OSError:
                    pass
                raise
            # Committed after close: Windows cannot replace a file that is still open.
            return self.cache.commit(self.part, self.item.sha256)

    def _acquire(self) -> CacheLock:
        announced = False
        while True:
            lock = self.cache.try_lock(self.item.sha256)
            if lock is not None:
                return lock
            if not announced:
                announced = True
                self.reporter.info("waiting for another cosybuild that is downloading %s" % self.item.filename)
            if self.cancel.wait(0.2):
                raise Cancelled()

    def _load(self, out: IO[bytes]) -> None:
        """Hash what an earlier attempt left, so the download continues where it stopped."""
        out.seek(0)
        while self.have <= self.item.size:
            chunk = out.read(CHUNK)
            if not chunk:
                break
            self.hasher.update(chunk)
            self.have += len(chunk)
        if self.have > self.item.size:
            self._discard(out)
        self.resumed = self.have > 0

    def _discard(self, out: IO[bytes]) -> None:
        # These bytes were counted as done (credited or advanced); they will come again.
        self.progress.grow(min(self.have, self.item.size))
        out.seek(0)
        out.truncate(0)
        self.hasher = hashlib.sha256()
        self.have = 0
        self.resumed = False

    def _download(self, out: IO[bytes]) -> None:
        item = self.item
        failures = 0
        clean_retry_done = False
        while True:
            if self.cancel.is_set():
                raise Cancelled()
            if self.have == item.size:
                actual = self.hasher.hexdigest()
                if actual == item.sha256:
                    out.flush()
                    return
                if self.resumed and not clean_retry_done:
                    # The mismatch may come from a stale .part; one download from zero decides.
                    clean_retry_done = True
                    self._discard(out)
                    continue
                raise ArtifactRejected(
                    "%s does not match the lock: sha256 %s, expected %s" % (item.filename, actual, item.sha256),
                    hint="the index serves different bytes under this name; run cosybuild lock again if that is expected",
                )
            before = self.have
            try:
                self._attempt(out)
            except _Transient as exc:
                if self.have > before:
                    failures = 0  # the link works, it is only flaky: keep going
                failures += 1
                if failures > self.retries:
                    raise FetchError(
                        "could not download %s from %s after %d attempts: %s"
                        % (item.filename, _host(item.url), failures, exc.reason),
                        hint="check the network or proxy and run again"
                        + ("; the partial download is kept and resumes" if self.have else ""),
                    ) from None
                delay = BACKOFF * (2 ** (failures - 1)) * (0.5 + random.random() / 2)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                if self.cancel.wait(min(delay, MAX_BACKOFF)):
                    raise Cancelled() from None

    def _attempt(self, out: IO[bytes]) -> None:
        """One request: continue from `self.have` if the server allows, else from zero."""
        item = self.item
        offset = self.have
        # identity: a compressing proxy would change the bytes we hash.
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = "bytes=%d-" % offset
        request = urllib.request.Request(item.url, headers=headers)
        local = urllib.parse.urlsplit(item.url).scheme == "file"
        try:
            response = self.opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as exc:
            exc.close()
            status = "HTTP %d %s" % (exc.code, exc.reason)
            if exc.code == 416 and offset:
                # The server's file ends before our .part does: the part cannot be right.
                self._discard(out)
                raise _Transient(status) from None
            if exc.code in _RETRY_STATUSES or exc.code >= 500:
                raise _Transient(status, _retry_after(exc.headers)) from None
            raise FetchError(
                "could not download %s from %s: %s" % (item.filename, _host(item.url), status),
                hint="check that the index still serves this file, or run cosybuild lock again",
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            if local or isinstance(exc, ValueError):
                # A missing local file or a malformed URL will not fix itself by waiting.
                raise FetchError(
                    "could not download %s: %s" % (item.filename, _reason(exc)),
                    hint="check the URL found for this file",
                ) from None
            raise _Transient(_reason(exc)) from None
        with response:
            status = response.status or 200  # file:// responses carry no status
            if status == 206:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not offset or not match or int(match.group(1)) != offset:
                    # Not the range we asked for: its bytes cannot be placed, start over.
                    self._discard(out)
                    raise _Transient("the server answered with a different byte range")
                if match.group(3) != "*":
                    self._check_total(int(match.group(3)))
                self.resumed = True
            else:
                if offset:
                    # The server ignored Range and sends the whole file: begin again at zero.
                    self._discard(out)
                length = response.headers.get("Content-Length")
                if length is not None and length.strip().isdigit():
                    self._check_total(int(length))
            self._stream(response, out)

    def _check_total(self, total: int) -> None:
        if total != self.item.size:
            raise ArtifactRejected(
                "%s does not match the lock: the server has %d bytes, the lock says %d"
                % (self.item.filename, total, self.item.size),
                hint="the index serves a different file under this name; run cosybuild lock again if that is expected",
            )

    def _stream(self, response: IO[bytes], out: IO[bytes]) -> None:
        size = self.item.size
        # Read up to one byte past the locked size, so an over-long body is caught, not stored.
        while self.have <= size:
            if self.cancel.is_set():
                raise Cancelled()
            try:
                chunk = response.read(min(CHUNK, size + 1 - self.have))
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(_reason(exc)) from None
            if not chunk:
                break
            if self.have + len(chunk) > size:
                raise ArtifactRejected(
                    "%s does not match the lock: the server sent more than the %d bytes the lock says"
                    % (self.item.filename, size),
                    hint="the index serves a different file under this name; run cosybuild lock again if that is expected",
                )
            try:
                out.write(chunk)
            except OSError as exc:
                raise EnvironmentUnsuitable(
                    "cannot write %s while downloading %s: %s" % (self.part, self.item.filename, exc.strerror or exc),
                    hint="free disk space or point COSYBUILD_CACHE at a larger disk",
                ) from None
            self.hasher.update(chunk)
            self.have += len(chunk)
            self.progress.advance(len(chunk))
        if self.have < size:
            raise _Transient("the connection closed after %d of %d bytes" % (self.have, size))


def _retry_after(headers: Optional[http.client.HTTPMessage]) -> Optional[float]:
    # Only the delta-seconds form; an HTTP date is rare for file servers and backoff covers it.
    value = headers.get("Retry-After", "") if headers is not None else ""
    value = value.strip()
    return float(value) if value.isdigit() else None
