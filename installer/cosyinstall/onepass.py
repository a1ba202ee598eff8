"""One read of an upload: its whole-file sha256 and the verified staging of its members, in one pass.

The zip is read once, sequentially from its first byte to its last, through the one hasher
whose digest SHA256SUMS promises. The compressed bytes of each member to be written are cut
out of that stream and handed, in order, to worker threads that inflate (bounded by the
declared size), hash (against the manifest's sha256, or the directory's CRC-32 when there is
none) and write them; zlib, hashlib and file writes release the GIL, so members are verified
in parallel while the reader goes on. Both digests are needed: SHA256SUMS can be rewritten on
the box after a damaged transfer, the manifest's sha256 are the builder's own. The bytes in
flight are bounded (BUDGET), so memory stays flat whatever the zip holds. Nothing is published
here: the caller commits only after `stage_one_pass` returned, i.e. after the whole-file digest
matched.

The page cache is spared on both sides, because its kernel time is taken from the cores uv
needs: large members are written past it (directwrite.py), and the upload's own pages are let
go of behind the read (pagecache.py).

With jobs=1 everything runs on the calling thread. A member this pass cannot decode itself
(Deflate64, hand-made zips only) is extracted afterwards through the reader's own stream.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from cosyinstall.artifact import FileEntry
from cosyinstall.directwrite import Direct, buffer_for
from cosyinstall.errors import ArtifactRejected, DiskFull, is_disk_full
from cosyinstall.install_plan import Item
from cosyinstall.pagecache import Behind
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.safepath import make_dirs
from cosyinstall.syncpool import SyncPool

__all__ = ["Target", "stage_one_pass", "default_jobs", "BUDGET", "READ_CHUNK"]

READ_CHUNK = 4 * 1024 * 1024
OUT_CHUNK = 1024 * 1024
# Compressed bytes read but not yet written, across all workers.
BUDGET = 64 * 1024 * 1024


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


@dataclass
class Target:
    """One member to write: where, and whether it must be on disk before it is renamed into the tree."""

    item: Item
    path: str
    durable: bool = True
    entry: Optional[FileEntry] = None  # filled once written and verified
    # Told (rel, path) as soon as this member is written and verified, from whichever thread wrote it.
    on_done: Optional[Callable[[str, str], None]] = None

    def done(self, entry: FileEntry) -> None:
        self.entry = entry
        if self.on_done is not None:
            self.on_done(self.item.rel, self.path)


class _Budget:
    """A byte budget: the reader waits while too much is in flight (but never on an empty pipe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.cond = threading.Condition()

    def take(self, n: int) -> None:
        with self.cond:
            while self.used and self.used + n > self.limit:
                self.cond.wait()
            self.used += n

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


class _Share:
    """One chunk read: its bytes stay in the budget until the last member piece cut from it is written.

    A piece is a view into the chunk, so the chunk lives until then, whatever the piece's length.
    """

    def __init__(self, budget: _Budget, size: int) -> None:
        self.budget = budget
        self.size = size
        self.holders = 1  # the reader, while it hands out pieces
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.holders += 1

    def drop(self) -> None:
        with self.lock:
            self.holders -= 1
            last = self.holders == 0
        if last:
            self.budget.give(self.size)


class _Member:
    """Inflate, bound, hash and write one member from its compressed pieces, in order."""

    def __init__(self, target: Target, info: zipfile.ZipInfo, label: str, mtime: float, direct: Direct,
                 syncs: Optional[SyncPool] = None) -> None:
        self.target = target
        self.direct = direct
        self.syncs = syncs
        self.info = info
        self.what = "%s in %s" % (target.item.key, label)
        self.mtime = mtime
        self.size = 0
        self.hasher = hashlib.sha256()
        self.crc = 0
        self.inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        self.out: Optional[Any] = None
        self.ended = False  # the reader handed over its last piece
        self.pieces: "queue.Queue[Optional[Tuple[memoryview, _Share]]]" = queue.Queue()

    def _emit(self, data: Any) -> None:
        self.size += len(data)
        if self.size > self.target.item.size:
            raise ArtifactRejected("%s is corrupt (it inflates past the %d bytes its manifest declares)"
                                   % (self.what, self.target.item.size))
        self.hasher.update(data)
        if self.target.item.sha256 is None:
            self.crc = zlib.crc32(data, self.crc)
        assert self.out is not None
        self.out.write(data)

    def _open(self) -> None:
        make_dirs(os.path.dirname(self.target.path))
        self.out = self.direct.open(self.target.path, self.target.item.size)

    def feed(self, piece: memoryview) -> None:
        if self.out is None:
            self._open()
        if self.inflater is None:
            self._emit(piece)
            return
        data: Any = piece
        room = self.target.item.size - self.size + 1
        while True:
            out = self.inflater.decompress(data, min(OUT_CHUNK, room))
            if out:
                self._emit(out)
                room = self.target.item.size - self.size + 1
            data = self.inflater.unconsumed_tail
            if not data or self.inflater.eof:
                break
        if self.inflater.eof and (self.inflater.unconsumed_tail or self.inflater.unused_data):
            raise ArtifactRejected("%s is corrupt (its deflate stream ends before its data)" % self.what)

    def finish(self) -> None:
        if self.out is None:  # an empty member
            self._open()
        if self.inflater is not None:
            tail = self.inflater.flush()
            if tail:
                self._emit(tail)
            if not self.inflater.eof:
                raise ArtifactRejected("%s is corrupt (its deflate stream is cut short)" % self.what)
        item = self.target.item
        if self.size != item.size:
            raise ArtifactRejected("%s has %d bytes but its manifest declares %d" % (self.what, self.size, item.size))
        digest = self.hasher.hexdigest()
        if item.sha256 is not None and digest != item.sha256:
            raise ArtifactRejected("%s is corrupt: sha256 %s, expected %s"
                                   % (self.what, digest[:16] + "…", item.sha256[:16] + "…"))
        if item.sha256 is None and (self.crc & 0xFFFFFFFF) != self.info.CRC:
            raise ArtifactRejected("%s is corrupt (CRC-32 differs)" % self.what)
        out = self.out
        assert out is not None
        out.end()  # raising, it stays self.out: abandon() closes it
        self.out = None
        # Modes are the installer's, never the umask's or the zip's beyond the executable bit.
        os.fchmod(out.fileno(), 0o755 if item.executable else 0o644)
        entry = FileEntry(item.rel, item.size, digest, item.executable)
        if self.target.durable and self.syncs is not None:
            # On disk before it is renamed into the tree: fsynced beside others (syncpool.py),
            # before the pass returns.
            self.syncs.submit(out, lambda: self._stamp(entry))
            return
        if self.target.durable:
            # On disk before it is renamed into the tree (a power cut then leaves old or new, never empty).
            os.fsync(out.fileno())
        out.close()
        self._stamp(entry)

    def _stamp(self, entry: FileEntry) -> None:
        # The member's own time, as unzip does: two installs of one zip are then identical.
        os.utime(self.target.path, (self.mtime, self.mtime))
        self.target.done(entry)

    def abandon(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


class _Pass:
    def __init__(self, workers: int, budget: _Budget) -> None:
        self.budget = budget
        self.errors: List[BaseException] = []
        self.failed = threading.Event()
        self.work: "queue.Queue[Optional[_Member]]" = queue.Queue()
        self.threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(workers)]
        for thread in self.threads:
            thread.start()

    def _worker(self) -> None:
        while True:
            member = self.work.get()
            if member is None:
                return
            while True:
                got = member.pieces.get()
                if got is None:
                    break
                piece, share = got
                try:
                    if not self.failed.is_set():
                        member.feed(piece)
                except BaseException as exc:  # handed to the reader, which raises the first
                    self._fail(exc)
                finally:
                    del piece
                    share.drop()
            try:
                if not self.failed.is_set():
                    member.finish()
            except BaseException as exc:
                self._fail(exc)
            finally:
                _quiet_close(member)

    def _fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.failed.set()

    def close(self) -> None:
        for _ in self.threads:
            self.work.put(None)
        for thread in self.threads:
            thread.join()


def _quiet_close(member: _Member) -> None:
    try:
        member.abandon()
    except OSError:
        pass


def stage_one_pass(
    reader: Any,
    targets: List[Target],
    expected_sha256: Optional[str] = None,
    mismatch: Optional[Callable[[str], ArtifactRejected]] = None,
    jobs: int = 1,
    reporter: Optional[Reporter] = None,
) -> Optional[str]:
    """Write `targets` (members of reader's zip) and, if `expected_sha256` is given, hash the whole file.

    Returns the whole-file digest (None when not asked for). A whole-file mismatch raises
    `mismatch(sentence)`; damage in a member raises a sentence naming it (prefixed by
    `mismatch` when the file was being checked against SHA256SUMS).
    """
    reporter = reporter or NullReporter()
    path, label = reader.path, reader.label
    whole = expected_sha256 is not None
    # With more than one job, each large member's writes go to a thread of their own too, and
    # the fsyncs of the members to be renamed into the tree wait side by side.
    direct = Direct(behind=True, buffer=buffer_for(jobs)) if jobs > 1 else Direct()
    syncs = SyncPool() if jobs > 1 and any(t.durable for t in targets) else None
    members: List[Tuple[int, int, _Member]] = []
    later: List[Target] = []
    for target in targets:
        info = reader._info(target.item.key)
        offset = getattr(info, "data_offset", None)
        if offset is None or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            later.append(target)
            continue
        members.append((offset, info.compress_size,
                        _Member(target, info, label, reader.mtime(target.item.key), direct, syncs)))
    members.sort(key=lambda m: m[0])
    size = os.path.getsize(path)
    total = size if whole else sum(m[1] for m in members)
    # The reader mostly waits on the disk and hashes: `jobs` workers beside it.
    workers = 0 if jobs <= 1 else jobs
    pipe = _Pass(workers, _Budget(BUDGET)) if workers else None
    hasher = hashlib.sha256()
    try:
        with reporter.task("extracting %s" % label, total) as task:
            _read(path, size, members, hasher if whole else None, pipe, task.advance)
    except BaseException as exc:
        _wrap(exc, whole, mismatch)
        raise
    finally:
        if pipe is not None:
            for _offset, _length, member in members:
                if not member.ended:  # a stopped read: let a worker waiting on it finish
                    member.pieces.put(None)
            pipe.close()
        for _offset, _length, member in members:
            _quiet_close(member)
        synced = syncs.close() if syncs is not None else None
        direct.close()
    if pipe is not None and pipe.errors:
        first = pipe.errors[0]
        _wrap(first, whole, mismatch)
        raise first
    if synced is not None:
        _wrap(synced, whole, mismatch)
        raise synced
    digest = hasher.hexdigest() if whole else None
    if whole and digest != expected_sha256:
        raise (mismatch or _plain_mismatch(path))("%s, although every member extracted is intact" % path)
    for target in later:
        _extract_later(reader, target)
    return digest


def _extract_later(reader: Any, target: Target) -> None:
    """A member the pass cannot decode itself (Deflate64): through the reader's own bounded stream."""
    item = target.item
    try:
        make_dirs(os.path.dirname(target.path))
        with open(target.path, "wb") as out:
            digest = reader.copy(item.key, item.size, item.sha256, out)
            os.fchmod(out.fileno(), 0o755 if item.executable else 0o644)
            out.flush()
            if target.durable:
                os.fsync(out.fileno())
        stamp = reader.mtime(item.key)
        os.utime(target.path, (stamp, stamp))
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(target.path) from None
        raise
    target.done(FileEntry(item.rel, item.size, digest, item.executable))


def _plain_mismatch(path: str) -> Callable[[str], ArtifactRejected]:
    def make(sentence: str) -> ArtifactRejected:
        return ArtifactRejected("%s does not match SHA256SUMS (%s)" % (path, sentence), "upload it again")
    return make


def _wrap(exc: BaseException, whole: bool, mismatch: Optional[Callable[[str], ArtifactRejected]]) -> None:
    """Member damage in a file checked against SHA256SUMS reads as the file not matching it; disk full is DiskFull."""
    if isinstance(exc, OSError) and is_disk_full(exc):
        raise DiskFull(str(exc.filename or "the staging folder")) from None
    if isinstance(exc, ArtifactRejected) and whole and mismatch is not None:
        raise mismatch(exc.message) from None


def _read(path: str, size: int, members: List[Tuple[int, int, _Member]], hasher: Any,
          pipe: Optional[_Pass], advance: Callable[[int], None]) -> None:
    """The one sequential read: hash every byte (if asked), cut out each member's compressed bytes."""
    index = 0
    pos = 0
    with open(path, "rb", buffering=0) as handle:
        forget = Behind(handle.fileno())
        while pos < size and (hasher is not None or index < len(members)):
            if pipe is not None and pipe.failed.is_set():
                return
            if hasher is None and pos < members[index][0]:
                # Nothing wanted here and no whole-file hash: skip, do not read.
                pos = members[index][0]
                handle.seek(pos)
            want = min(READ_CHUNK, size - pos)
            if pipe is not None:
                pipe.budget.take(want)
            chunk = handle.read(want)
            if len(chunk) != want:
                if pipe is not None:
                    pipe.budget.give(want)
                raise ArtifactRejected("%s changed while it was read (%d bytes expected at byte %d)" % (path, want, pos))
            if hasher is not None:
                hasher.update(chunk)
            end = pos + want
            index = _dispatch(memoryview(chunk), pos, end, members, index, pipe)
            pos = end
            forget.upto(pos)
            advance(want)
        forget.upto(pos, final=True)


def _dispatch(view: memoryview, pos: int, end: int, members: List[Tuple[int, int, _Member]], index: int,
              pipe: Optional[_Pass]) -> int:
    """Hand the chunk [pos, end) to the members it holds bytes of; returns the first member not complete."""
    share = _Share(pipe.budget, end - pos) if pipe is not None else None
    while index < len(members):
        start, length, member = members[index]
        if start >= end:
            break
        lo, hi = max(start, pos), min(start + length, end)
        if pipe is None:
            if hi > lo:
                member.feed(view[lo - pos:hi - pos])
        else:
            assert share is not None
            if lo == start:
                pipe.work.put(member)
            if hi > lo:
                share.add()
                member.pieces.put((view[lo - pos:hi - pos], share))
        if start + length > end:
            break  # it continues in the next chunk
        if pipe is None:
            member.finish()
        else:
            member.pieces.put(None)
            member.ended = True
        index += 1
    if share is not None:
        share.drop()
    return index
