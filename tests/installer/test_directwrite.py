"""Issue 15: large staged files are written past the page cache, and the upload's pages are let go of.

What a user relies on: every byte staged exactly (any length, any split of the writes), whether
the filesystem takes O_DIRECT, refuses it when the file is opened, or refuses it at a write; and
an apply that does not leave its multi-GB upload in the box's page cache.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from cosyinstall import directwrite
from cosyinstall.directwrite import ALIGN, BUFFER, DIRECT_MIN, Direct, buffer_for
from cosyinstall.errors import DiskFull
from cosyinstall.install_plan import Item
from cosyinstall.onepass import Target, stage_one_pass
from cosyinstall.pagecache import forget_file

from support import PassReader


def _pattern(n: int) -> bytes:
    block = hashlib.sha256(b"cosy").digest() * 4096
    return (block * (n // len(block) + 1))[:n]


def _write(direct: Direct, path: Path, data: bytes, pieces=(7, 4096, 100_003, BUFFER + 5)) -> bool:
    """Write `data` in uneven pieces; True when the file was open with O_DIRECT at the end."""
    out = direct.open(str(path), len(data))
    try:
        view = memoryview(data)
        i = 0
        while len(view):
            n = pieces[i % len(pieces)]
            out.write(view[:n])
            view = view[n:]
            i += 1
        was_direct = bool(fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT)
        out.end()
    finally:
        out.close()  # as the pass does with a member it abandons
    return was_direct


def _direct_works(tmp_path: Path) -> bool:
    try:
        fd = os.open(str(tmp_path / "probe"), os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    return True


@pytest.mark.parametrize("behind", [False, True])
@pytest.mark.parametrize("size", [DIRECT_MIN, DIRECT_MIN + 1, 3 * BUFFER + ALIGN - 1, 5 * BUFFER])
def test_large_files_are_written_direct_and_exactly(tmp_path: Path, size: int, behind: bool) -> None:
    if not _direct_works(tmp_path):
        pytest.skip("the test folder's filesystem refuses O_DIRECT (the refusal paths are tested below)")
    data = _pattern(size)
    direct = Direct(behind=behind)
    assert _write(direct, tmp_path / "big", data), "a large file went through the page cache"
    direct.close()
    assert (tmp_path / "big").stat().st_size == size  # the padded last block was cut back
    assert (tmp_path / "big").read_bytes() == data


def test_small_files_go_through_the_page_cache(tmp_path: Path) -> None:
    direct = Direct()
    data = _pattern(DIRECT_MIN - 1)
    assert not _write(direct, tmp_path / "small", data)
    assert (tmp_path / "small").read_bytes() == data
    empty = direct.open(str(tmp_path / "empty"), 0)
    empty.end()
    empty.close()
    assert (tmp_path / "empty").read_bytes() == b""


def test_a_filesystem_refusing_o_direct_at_open_gets_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    real_open = os.open

    def refusing(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(directwrite.os, "open", refusing)
    direct = Direct()
    data = _pattern(2 * BUFFER + 12345)
    assert not _write(direct, tmp_path / "a", data)
    assert not direct.enabled, "a refusal should turn direct writes off for the rest of the apply"
    assert (tmp_path / "a").read_bytes() == data


@pytest.mark.parametrize("behind", [False, True])
def test_a_refusal_at_the_write_finishes_the_file_through_the_page_cache(tmp_path: Path, monkeypatch,
                                                                          behind: bool) -> None:
    if not _direct_works(tmp_path):
        pytest.skip("the test folder's filesystem refuses O_DIRECT")
    real_write = os.write
    refused = []

    def refusing(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and len(refused) < 1:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(directwrite.os, "write", refusing)
    direct = Direct(behind=behind)
    data = _pattern(3 * BUFFER + 999)
    _write(direct, tmp_path / "b", data)
    assert refused and not direct.enabled
    assert (tmp_path / "b").stat().st_size == len(data)
    assert (tmp_path / "b").read_bytes() == data


@pytest.mark.parametrize("behind", [False, True])
def test_disk_full_during_a_direct_write_is_an_oserror_not_a_short_file(tmp_path: Path, monkeypatch,
                                                                         behind: bool) -> None:
    if not _direct_works(tmp_path):
        pytest.skip("the test folder's filesystem refuses O_DIRECT")
    real_write = os.write

    def full(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(directwrite.os, "write", full)
    direct = Direct(behind=behind)
    with pytest.raises(OSError) as caught:
        _write(direct, tmp_path / "c", _pattern(4 * BUFFER))
    assert caught.value.errno == errno.ENOSPC
    direct.close()
    assert not [t for t in threading.enumerate() if t.name == "direct-write"], "a writer thread outlived its file"


def test_behind_the_caller_blocks_are_written_by_another_thread_two_buffers_at_most(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    if not _direct_works(tmp_path):
        pytest.skip("the test folder's filesystem refuses O_DIRECT")
    real_write = os.write
    writers = set()

    def recording(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            writers.add(threading.get_ident())
        return real_write(fd, data)

    monkeypatch.setattr(directwrite.os, "write", recording)
    direct = Direct(behind=True)
    made = []
    real_take = direct.take
    monkeypatch.setattr(direct, "take", lambda: made.append(1) or real_take())
    data = _pattern(8 * BUFFER + 123)
    assert _write(direct, tmp_path / "d", data)
    assert writers and threading.get_ident() not in writers, "the caller waited on the disk itself"
    assert (tmp_path / "d").read_bytes() == data
    # Buffers go back to the pool as they are written: a second file takes no new memory.
    assert _write(direct, tmp_path / "e", data)
    assert len(direct._free) <= 2, "more than two buffers were in use for one file"
    assert (tmp_path / "e").read_bytes() == data
    direct.close()


@pytest.mark.parametrize("jobs", [1, 2])
def test_one_pass_stages_large_members_exactly_and_leaves_the_upload_uncached(tmp_path: Path, jobs: int) -> None:
    files = {"wheels/big.whl": _pattern(3 * BUFFER + 77), "wheels/odd.whl": _pattern(DIRECT_MIN + 4095)[::-1],
             "models/weights.bin": _pattern(2 * BUFFER + 1), "small.txt": b"hello\n"}
    path = tmp_path / "offline_packages.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED if name.startswith("models/") else zipfile.ZIP_STORED)
    os.sync()  # an upload on the box arrived long before: its cached pages are clean, and can be dropped
    whole = hashlib.sha256(path.read_bytes()).hexdigest()
    items = [Item(n, n, len(d), hashlib.sha256(d).hexdigest(), False) for n, d in files.items()]
    targets = [Target(i, str(tmp_path / "out" / i.rel), durable=True) for i in items]
    assert stage_one_pass(PassReader(path), targets, whole, None, jobs=jobs) == whole
    for item, target in zip(items, targets, strict=True):
        assert Path(target.path).read_bytes() == files[item.rel]
        assert os.stat(target.path).st_mode & 0o777 == 0o644
    if shutil.which("fincore") is None:
        pytest.skip("no fincore (util-linux) to read what the page cache holds")
    cached = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert int(cached) == 0, "the upload's pages were kept in the page cache after its one read"


def test_forget_file_drops_a_consumed_wheel_and_ignores_a_missing_one(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(_pattern(4 * 1024 * 1024))
    os.sync()  # clean pages: the kind uv leaves after reading a wheel
    wheel.read_bytes()
    forget_file(str(wheel))
    forget_file(str(tmp_path / "gone.whl"))
    if shutil.which("fincore") is None:
        pytest.skip("no fincore (util-linux) to read what the page cache holds")
    cached = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(wheel)],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert int(cached) == 0


def test_a_link_planted_where_a_staged_file_goes_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "staged.whl").symlink_to(victim)
    for size in (10, 2 * DIRECT_MIN):
        with pytest.raises(OSError) as caught:
            Direct().open(str(tmp_path / "staged.whl"), size)
        assert caught.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"keep me"


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_disk_that_fills_on_a_members_last_block_leaves_no_file_open(tmp_path: Path, monkeypatch, jobs: int) -> None:
    if not _direct_works(tmp_path):
        pytest.skip("the test folder's filesystem refuses O_DIRECT")
    block = buffer_for(jobs) if jobs > 1 else BUFFER  # the pass writes larger blocks behind workers
    data = _pattern(block + 4095)  # one full buffer, then a padded last block
    path = tmp_path / "offline_packages.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("wheels/big.whl", (2020, 1, 1, 0, 0, 0)), data)
    items = [Item("wheels/big.whl", "wheels/big.whl", len(data), hashlib.sha256(data).hexdigest(), False)]
    real_write = os.write

    def full_at_the_end(fd, view):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and len(view) < block:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, view)

    monkeypatch.setattr(directwrite.os, "write", full_at_the_end)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(DiskFull):  # one sentence and exit 4, as any full disk
        stage_one_pass(PassReader(path), [Target(items[0], str(tmp_path / "out" / "big.whl"), durable=False)],
                       None, None, jobs=jobs)
    leaked = [os.readlink("/proc/self/fd/%s" % fd) for fd in set(os.listdir("/proc/self/fd")) - before
              if os.path.exists("/proc/self/fd/%s" % fd)]
    assert not [p for p in leaked if p.endswith("big.whl")], "the staged file was left open: %s" % leaked
