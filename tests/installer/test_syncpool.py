"""Issue 15: the fsyncs of staged files to be renamed into the tree wait side by side, and still all
end before the pass returns.

What a user relies on: a power cut after the apply renamed a file never leaves it empty (each
durable file is fsynced before the pass says it is there), a failed fsync ends the pass with that
error and no file left open, and nothing is lost when thousands of small files are staged.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import zipfile
from pathlib import Path

import pytest

from cosyinstall import syncpool
from cosyinstall.errors import DiskFull
from cosyinstall.install_plan import Item
from cosyinstall.onepass import Target, stage_one_pass
from cosyinstall.syncpool import SyncPool

from support import PassReader


def _zip(path: Path, count: int) -> list:
    items = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(count):
            data = (b"layer %d\n" % i) * (i % 7 + 1)
            name = "voice/conf/%04d.json" % i
            archive.writestr(name, data)
            items.append(Item(name, name, len(data), hashlib.sha256(data).hexdigest(), False))
    return items


def _open_fds(suffix: str) -> list:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/%s" % fd)
        except OSError:
            continue
        if target.endswith(suffix):
            found.append(target)
    return found


def test_every_durable_member_is_fsynced_before_the_pass_says_it_is_there(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "pretrained_models.zip"
    items = _zip(path, 300)
    synced = set()
    lock = threading.Lock()
    real_fsync = os.fsync
    threads = set()

    def recording(fd: int) -> None:
        real_fsync(fd)
        with lock:
            synced.add(os.path.realpath(os.readlink("/proc/self/fd/%d" % fd)))
            threads.add(threading.current_thread().name)

    monkeypatch.setattr(syncpool.os, "fsync", recording)
    told = []

    def on_done(rel: str, staged: str) -> None:
        with lock:
            assert os.path.realpath(staged) in synced, "%s was reported before it was fsynced" % rel
            told.append(rel)

    out = tmp_path / "staging"
    targets = [Target(i, str(out / i.rel), True, on_done=on_done) for i in items]
    stage_one_pass(PassReader(path), targets, None, None, jobs=2)
    assert sorted(told) == sorted(i.rel for i in items)  # each told once, none lost
    assert all(t.entry is not None for t in targets)
    assert threads == {"staged-fsync"}, "the fsyncs did not go through the pool"
    with zipfile.ZipFile(path) as archive:
        for item in items:
            assert (out / item.rel).read_bytes() == archive.read(item.key)
    assert not _open_fds(".json")


@pytest.mark.parametrize("code, raised", [(errno.EIO, OSError), (errno.ENOSPC, DiskFull)])
def test_a_failed_fsync_ends_the_pass_with_its_error_and_no_file_open(tmp_path: Path, monkeypatch,
                                                                     code: int, raised: type) -> None:
    path = tmp_path / "pretrained_models.zip"
    items = _zip(path, 200)
    calls = []

    def failing(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 50:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(syncpool.os, "fsync", failing)
    targets = [Target(i, str(tmp_path / "staging" / i.rel), True) for i in items]
    with pytest.raises(raised):
        stage_one_pass(PassReader(path), targets, None, None, jobs=2)
    assert not _open_fds(".json"), "a staged file was left open"
    assert not [t for t in threading.enumerate() if t.name == "staged-fsync"], "a pool thread outlived the pass"


def test_the_pool_holds_at_most_its_limit_of_open_files(tmp_path: Path) -> None:
    gate = threading.Event()
    pool = SyncPool(threads=2, most=3)
    handed = []

    class Slow:
        def __init__(self, i: int) -> None:
            self.f = open(tmp_path / ("f%d" % i), "wb")

        def fileno(self) -> int:
            gate.wait(5)
            return self.f.fileno()

        def close(self) -> None:
            self.f.close()

    def hand(i: int) -> None:
        pool.submit(Slow(i), lambda: None)
        handed.append(i)

    threads = [threading.Thread(target=hand, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(250):  # the first three go in at once ...
        if len(handed) >= 3:
            break
        threading.Event().wait(0.02)
    threading.Event().wait(0.2)  # ... and the others stay out while those wait
    assert len(handed) == 3, "more files were handed over than the pool may hold open"
    gate.set()
    for thread in threads:
        thread.join()
    assert pool.close() is None and len(handed) == 6
