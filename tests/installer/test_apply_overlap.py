"""Issue 15: apply at the floor. One read of each upload; uv is fed verified wheels while the upload is read.

The feed (venv_feed.py) is driven here directly with recorded callbacks, so its rules are shown
without timing: nothing before uv's own needs have landed, batches only of whole (hard-linked)
wheels, a batch large enough to keep uv's threads busy, every wheel exactly once, a failed pass
stops it, uv's error reaches the apply. The apply-level test runs the real uv on the demo.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import types
import zipfile
from pathlib import Path
from typing import List

import pytest

from cosyinstall import onepass, venv_feed
from cosyinstall.errors import ArtifactRejected
from cosyinstall.install_plan import Item
from cosyinstall.onepass import Target, stage_one_pass
from cosyinstall.progress import NullReporter
from cosyinstall.venv_feed import VenvFeed, split_batch
from cosyinstall.zipwrite import Member, member_order, write_artifact
from support import PassReader, apply_argv, run


class _NoProgress:
    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Recorder:
    """Stands in for uv: records each batch and what the find-links folder held, optionally held back."""

    def __init__(self, ready: Path) -> None:
        self.ready = ready
        self.prepared = threading.Event()
        self.batches: List[List[str]] = []
        self.lanes: List[int] = []
        self.seen: List[List[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.started = False
        self.fail = False

    def prepare(self) -> None:
        self.prepared.set()

    def install(self, requirements: str, find_links: str, lane: int) -> None:
        with self.lock:
            first, self.started = not self.started, True
        if first:  # the gate holds the first run only: the one that holds torch in a real apply
            self.gate.wait(10)
        assert Path(find_links) == self.ready
        with self.lock:
            self.batches.append(Path(requirements).read_text().split())
            self.lanes.append(lane)
        self.seen.append(sorted(os.listdir(find_links)))
        if self.fail:
            raise RuntimeError("uv failed on this batch")


def _feed(tmp_path: Path, sizes: dict, rec: _Recorder, needs=("uv/uv",), **lanes) -> VenvFeed:
    wheels = {rel: "%s==1" % Path(rel).stem for rel in sizes}
    return VenvFeed(wheels, set(needs), str(rec.ready), rec.prepare, rec.install,
                    lambda left: _NoProgress(), NullReporter(), sizes=sizes, **lanes)


def _land(feed: VenvFeed, staging: Path, rel: str) -> None:
    path = staging / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(rel.encode())
    feed.landed(rel, str(path))


def test_feed_waits_for_uv_then_installs_every_wheel_once_from_whole_files(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    sizes = {"wheels/big.whl": 600, "wheels/mid.whl": 200, "wheels/a.whl": 100, "wheels/b.whl": 100}
    feed = _feed(tmp_path, sizes, rec).start()
    _land(feed, staging, "wheels/big.whl")
    assert not rec.prepared.wait(0.3), "the venv was made before uv itself was staged"
    rec.gate.clear()  # hold the first uv run, so the next wheels land while it runs
    _land(feed, staging, "uv/uv")
    assert rec.prepared.wait(5)
    _land(feed, staging, "wheels/mid.whl")
    _land(feed, staging, "wheels/a.whl")
    rec.gate.set()
    _land(feed, staging, "wheels/b.whl")
    feed.finish()
    installed = [line for batch in rec.batches for line in batch]
    assert sorted(installed) == sorted("%s==1" % Path(r).stem for r in sizes)  # each exactly once
    assert rec.batches[0] == ["big==1"], "the first run should start on the big wheel as soon as uv could run"
    for batch, seen in zip(rec.batches, rec.seen, strict=True):
        # uv's find-links folder holds only wheels handed over so far: never a file still being written.
        assert {"%s.whl" % line.split("==")[0] for line in batch} <= set(seen)
    for rel in sizes:  # hard links of the staged files, not copies
        assert os.path.samefile(staging / rel, rec.ready / Path(rel).name)
    assert feed.batches == len(rec.batches) >= 2


def test_feed_does_not_start_uv_on_a_sliver_while_the_upload_is_still_read(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    sizes = {"wheels/w%02d.whl" % i: 10 for i in range(20)}
    feed = _feed(tmp_path, sizes, rec, needs=())
    _land(feed, staging, "wheels/w00.whl")  # copied from the box for a delta: lands before the feed starts
    feed.start()
    for i in range(1, 4):
        _land(feed, staging, "wheels/w%02d.whl" % i)
    assert rec.batches == [], "uv ran on 4 of 20 equal wheels: a run that short cannot use uv's threads"
    _land(feed, staging, "wheels/w04.whl")  # 5 of 20: a quarter of what is left
    for i in range(5, 20):
        _land(feed, staging, "wheels/w%02d.whl" % i)
    feed.finish()
    assert len(rec.batches[0]) >= 5
    assert sum(len(b) for b in rec.batches) == 20


@pytest.mark.parametrize("lanes", [1, 2])
def test_with_two_lanes_the_largest_wheel_starts_alone_as_soon_as_it_lands(tmp_path: Path, lanes: int) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    # torch is a fifth of the bytes: less than the quarter a run otherwise waits for.
    sizes = {"wheels/torch.whl": 200, **{"wheels/w%d.whl" % i: 80 for i in range(10)}}
    feed = _feed(tmp_path, sizes, rec, needs=(), lanes=lanes).start()
    _land(feed, staging, "wheels/torch.whl")
    for _ in range(100):
        if rec.batches:
            break
        threading.Event().wait(0.02)
    if lanes == 2:
        assert rec.batches == [["torch==1"]], "the longest unpack waited for more wheels although a lane was free"
    else:  # one lane: torch's run would hold uv's lock, so it waits for company as before
        assert rec.batches == []
    for i in range(10):
        _land(feed, staging, "wheels/w%d.whl" % i)
    feed.finish()
    assert sorted(line for batch in rec.batches for line in batch) == sorted("%s==1" % Path(r).stem for r in sizes)
    if lanes == 1:
        assert "torch==1" in rec.batches[0] and len(rec.batches[0]) > 1


def test_a_second_lane_installs_what_lands_while_the_first_run_is_busy_then_merges_once(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    events: List[str] = []
    sizes = {"wheels/torch.whl": 400, "wheels/cudnn.whl": 300, "wheels/c.whl": 100, "wheels/d.whl": 100,
             "wheels/e.whl": 100}
    feed = _feed(tmp_path, sizes, rec, lanes=2, open_lane=lambda lane: events.append("open %d" % lane),
                 merge=lambda: events.append("merge after %d batches" % len(rec.batches))).start()
    rec.gate.clear()  # the first run (torch's) is held until the rest has landed
    _land(feed, staging, "uv/uv")
    _land(feed, staging, "wheels/torch.whl")
    for _ in range(250):
        if rec.started:
            break
        threading.Event().wait(0.02)
    _land(feed, staging, "wheels/cudnn.whl")
    for _ in range(250):  # the other lane takes it although the first run has not finished
        if rec.batches:
            break
        threading.Event().wait(0.02)
    assert rec.batches == [["cudnn==1"]], "nothing ran beside the held first run"
    assert events == ["open 1"], "the side venv must be made before its first batch, once"
    for rel in ("wheels/c.whl", "wheels/d.whl", "wheels/e.whl"):
        _land(feed, staging, rel)
    rec.gate.set()
    feed.finish()
    installed = [line for batch in rec.batches for line in batch]
    assert sorted(installed) == sorted("%s==1" % Path(r).stem for r in sizes)  # each exactly once
    assert rec.lanes[rec.batches.index(["torch==1"])] != rec.lanes[0]  # cudnn's run was in the other lane
    assert events == ["open 1", "merge after %d batches" % len(rec.batches)]  # merged once, after every run
    assert feed.lanes_used == {0, 1}


def test_after_the_read_a_lane_takes_half_the_bytes_and_leaves_the_rest_to_the_other() -> None:
    mib = 1024 * 1024
    sizes = {"w/a.whl": 300 * mib, "w/b.whl": 200 * mib, "w/c.whl": 60 * mib, "w/d.whl": 30 * mib, "w/e.whl": 10 * mib}
    batch, left = split_batch(sorted(sizes), sizes)
    assert batch == ["w/a.whl"] and sorted(left) == ["w/b.whl", "w/c.whl", "w/d.whl", "w/e.whl"]
    batch, left = split_batch(left, sizes)  # the next free lane halves what is left again
    assert batch == ["w/b.whl"] and sorted(left) == ["w/c.whl", "w/d.whl", "w/e.whl"]
    assert sorted(sum(split_batch(left, sizes), [])) == left  # nothing lost or doubled
    # Too little left to be worth a second uv start, or one wheel: all of it in one run.
    small = {"w/x.whl": 40 * mib, "w/y.whl": 40 * mib}
    assert split_batch(sorted(small), small) == (sorted(small), [])
    assert split_batch(["w/a.whl"], sizes) == (["w/a.whl"], [])


def test_with_one_lane_nothing_is_opened_beside_the_venv(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    opened: List[int] = []
    feed = _feed(tmp_path, {"wheels/a.whl": 10, "wheels/b.whl": 10}, rec, lanes=1, open_lane=opened.append).start()
    for rel in ("uv/uv", "wheels/a.whl", "wheels/b.whl"):
        _land(feed, staging, rel)
    feed.finish()
    assert opened == [] and set(rec.lanes) == {0}
    assert sorted(line for batch in rec.batches for line in batch) == ["a==1", "b==1"]


def test_a_failed_pass_stops_the_feed_and_uv_errors_reach_the_apply(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    feed = _feed(tmp_path, {"wheels/a.whl": 10, "wheels/b.whl": 10}, rec).start()
    _land(feed, staging, "wheels/a.whl")
    feed.abort()  # the pass failed before uv itself landed
    assert not rec.prepared.is_set() and rec.batches == []

    rec = _Recorder(tmp_path / "feed2" / "ready")
    rec.fail = True
    feed = _feed(tmp_path, {"wheels/a.whl": 10}, rec).start()
    _land(feed, staging, "uv/uv")
    _land(feed, staging, "wheels/a.whl")
    with pytest.raises(RuntimeError, match="uv failed"):
        feed.finish()


def test_a_feed_missing_what_uv_needs_ends_in_one_sentence_and_links_fall_back_to_copies(
        tmp_path: Path, monkeypatch) -> None:
    staging = tmp_path / "staging"
    rec = _Recorder(tmp_path / "feed" / "ready")
    feed = _feed(tmp_path, {"wheels/a.whl": 10}, rec).start()
    _land(feed, staging, "wheels/a.whl")
    with pytest.raises(ArtifactRejected, match="the venv was left without uv/uv"):
        feed.finish()  # a bug-only state, but still a sentence and exit 3, never a traceback

    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted", src)

    monkeypatch.setattr(venv_feed.os, "link", no_links)  # a filesystem without hard links
    rec = _Recorder(tmp_path / "feed2" / "ready")
    feed = _feed(tmp_path, {"wheels/b.whl": 10}, rec, needs=()).start()
    _land(feed, staging, "wheels/b.whl")
    feed.finish()
    assert rec.batches == [["b==1"]] and (rec.ready / "b.whl").read_bytes() == b"wheels/b.whl"


# -- the one read ---------------------------------------------------------------------------


class _Counting:
    """hashlib.sha256 that counts the bytes it is given (all instances together)."""

    total = 0

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, data: bytes) -> None:
        _Counting.total += len(data)
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_one_pass_reads_once_hashes_file_and_members_and_writes_exact_members(tmp_path: Path, monkeypatch, jobs: int) -> None:
    files = {"wheels/w%d.whl" % i: os.urandom(300_000 + 7919 * i) for i in range(6)}
    files["conf/a.json"] = b'{"a": 1}\n' * 4000
    path = tmp_path / "offline_packages.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED)
    whole = hashlib.sha256(path.read_bytes()).hexdigest()
    items = [Item(n, n, len(d), hashlib.sha256(d).hexdigest(), False) for n, d in files.items()]
    monkeypatch.setattr(onepass, "hashlib", types.SimpleNamespace(sha256=_Counting))

    _Counting.total = 0
    targets = [Target(i, str(tmp_path / "out" / i.rel), durable=False) for i in items]
    assert stage_one_pass(PassReader(path), targets, whole, None, jobs=jobs) == whole
    # One read: the whole file through its digest, each member's bytes through its own; nothing more.
    assert _Counting.total == path.stat().st_size + sum(len(d) for d in files.values())
    for item, target in zip(items, targets, strict=True):
        assert Path(target.path).read_bytes() == files[item.rel]
        assert target.entry is not None and target.entry.sha256 == item.sha256

    # An upload verified before (no whole-file digest asked): each member is hashed on its own.
    _Counting.total = 0
    targets = [Target(i, str(tmp_path / "again" / i.rel), durable=False) for i in items]
    stage_one_pass(PassReader(path), targets, None, None, jobs=jobs)
    assert _Counting.total == sum(len(d) for d in files.values())


def test_a_damaged_wheel_is_named_and_nothing_is_installed(dist: Path, tmp_path: Path) -> None:
    """A damaged wheel whose upload does not match SHA256SUMS: named, and nothing is installed."""
    packages = dist / "offline_packages.zip"
    with zipfile.ZipFile(packages) as archive:
        info = max((i for i in archive.infolist() if i.filename.startswith("wheels/")), key=lambda i: i.file_size)
    with open(packages, "r+b") as handle:  # flip one byte inside the stored wheel's data
        handle.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", handle.read(4))
        handle.seek(info.header_offset + 30 + name_len + extra_len + info.file_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    to = tmp_path / "to"
    proc = run(apply_argv(dist, to))
    assert proc.returncode != 0
    assert info.filename in proc.stderr and "offline_packages.zip" in proc.stderr, proc.stderr
    assert not to.exists(), "a failed first install left %s behind" % sorted(os.listdir(to))


def test_first_install_fills_the_venv_while_reading_and_leaves_no_feed_files(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    proc = run(apply_argv(dist, to))
    assert proc.returncode == 0, proc.stderr
    log = (to / ".cosyinstall" / "install.log").read_text()
    assert "packages installed while the upload is read" in log
    assert "while the upload was read" in log
    state = Path(os.path.realpath(to)).parent.parent / "state"
    leftovers = [str(p) for p in state.rglob("*") if p.name == "ready" or p.name.startswith("batch-")]
    assert leftovers == []
    with zipfile.ZipFile(dist / "offline_packages.zip") as archive:
        wheels = [i.filename for i in archive.infolist() if i.filename.startswith("wheels/")]
    site = list((to / ".venv" / "lib").glob("python*/site-packages"))[0]
    assert len(list(site.glob("*.dist-info"))) >= len(wheels)


# -- the order in the zip -------------------------------------------------------------------


def test_uv_and_the_largest_wheels_come_first_and_the_manifest_lists_by_name(tmp_path: Path) -> None:
    sources = {}
    for name, size in (("app/server.py", 50), ("requirements.txt", 40), ("uv/uv", 30), ("wheels/a.whl", 10),
                       ("wheels/big.whl", 900), ("wheels/mid.whl", 300), ("python/cpython.tar.gz", 20)):
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        sources[name] = path
    members = [Member(n, str(p), p.stat().st_size, None, n == "uv/uv") for n, p in sources.items()]
    out = tmp_path / "offline_packages.zip"
    write_artifact(str(out), "packages", "t", {"python": "3.10", "platform": "x86_64-manylinux_2_28"}, members)
    with zipfile.ZipFile(out) as archive:
        order = archive.namelist()
        manifest = json.loads(archive.read("MANIFEST.json"))
    assert order == ["python/cpython.tar.gz", "requirements.txt", "uv/uv", "wheels/big.whl", "wheels/mid.whl",
                     "wheels/a.whl", "app/server.py", "MANIFEST.json"]
    assert [f["path"] for f in manifest["files"]] == sorted(sources)
    assert sorted(members, key=lambda m: member_order(m.arcname, m.size))[0].arcname == "python/cpython.tar.gz"
