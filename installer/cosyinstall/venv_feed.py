"""uv fed while the upload is read: a new venv is filled with each batch of wheels as they land.

A first install (or a rebuild) would otherwise read the whole packages zip and only then start
uv, leaving uv's half of the work and the read's half one after the other. Here a thread waits
for the members uv needs first (its binary, and the bundled CPython when that is the one
chosen), creates the venv, then runs `uv pip install --no-deps` on whatever wheels the pass
has written and checked against their sha256 since the last run, until the pass ends. Every
batch names its wheels `name==version` from a find-links folder of hard links that holds only
finished wheels, so uv never sees a half-written file and records them as it would from the
whole requirements file.

With `lanes` above 1, that many threads take batches: lane 0 installs into the venv, each
other lane into a side venv of its own (venv_lanes.py), so a second uv run unpacks the wheels
that landed while the first is still on torch instead of waiting for uv's lock on the venv.
finish() joins them all and hands the lanes' files to the venv (`merge`).

Nothing here is a commit: the venv belongs to the generation being built aside and the journal
holds the venv step as pending, so a pass that fails (a whole-file digest that does not match
SHA256SUMS) stops the feeding and the failed apply removes the venv as before.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from cosyinstall.errors import ArtifactRejected, is_disk_full
from cosyinstall.pagecache import forget_file
from cosyinstall.progress import Reporter
from cosyinstall.uvprogress import InstallProgress

__all__ = ["VenvFeed", "split_batch", "SPLIT_MIN"]

# Below twice this many bytes left, what remains goes to one uv run (each run costs a start).
SPLIT_MIN = 64 * 1024 * 1024
# A wheel this share of the bytes still to install is worth a run of its own beside another lane.
BIG_SHARE = 0.125


def split_batch(landed: List[str], sizes: Dict[str, int]) -> Tuple[List[str], List[str]]:
    """(batch, left) once the read has ended and more than one lane runs: a lane takes half the
    bytes, largest first, and leaves the rest to a lane that is free now or soon, so the last
    wheels are not unpacked by one uv run while the other lane sits idle."""
    total = sum(sizes.get(rel, 0) for rel in landed)
    if len(landed) < 2 or total < 2 * SPLIT_MIN:
        return list(landed), []
    batch: List[str] = []
    left: List[str] = []
    taken = 0
    for rel in sorted(landed, key=lambda r: sizes.get(r, 0), reverse=True):
        if taken * 2 < total:
            batch.append(rel)
            taken += sizes.get(rel, 0)
        else:
            left.append(rel)
    return batch, left


class VenvFeed:
    """Feeding threads: `landed(rel, path)` from the pass, `finish()` or `abort()` from the apply.

    `needs` are the staged files the first batch waits for; `prepare()` runs once they are all
    there (it creates the venv) and what it returns is kept as `prepared`;
    `install(requirements, find_links, lane)` runs one uv batch into lane `lane` (0: the venv);
    `open_lane(lane)` makes side venv `lane` before its first batch; `merge()` moves the side
    venvs into the venv once every run has ended.
    `wheels` maps each wheel's staged rel path to its requirement line (`name==version`).
    """

    def __init__(self, wheels: Dict[str, str], needs: Set[str], ready_dir: str,
                 prepare: Callable[[], Any], install: Callable[[str, str, int], None],
                 progress: Callable[[int], InstallProgress], reporter: Reporter,
                 sizes: Optional[Dict[str, int]] = None, lanes: int = 1,
                 open_lane: Callable[[int], None] = lambda lane: None,
                 merge: Callable[[], Any] = lambda: None) -> None:
        self.wheels = dict(wheels)
        self.sizes = dict(sizes or {})
        # A uv run lasts as long as its largest wheel (one wheel is unpacked by one thread): a run
        # is started on at least this share of the bytes still to install, so that it has other
        # wheels to unpack beside its largest, or on whatever is there once the pass has ended.
        self.min_share = 0.25
        self.needs = set(needs)
        self.ready_dir = ready_dir
        self.prepare = prepare
        self.prepared: Any = None
        self.install = install
        self.open_lane = open_lane
        self.merge = merge
        self.progress = progress
        self.reporter = reporter
        self._cond = threading.Condition()
        self._landed: List[str] = []  # wheel rels written and verified, not yet given to uv
        self._ended = False
        self._aborted = False
        self._venv_made = False
        self.error: Optional[BaseException] = None
        self.installed = 0
        self.batches = 0
        self.lanes_used: Set[int] = set()
        self._given: Set[str] = set()
        self._threads = [threading.Thread(target=self._run, args=(lane,), name="venv-feed-%d" % lane, daemon=True)
                         for lane in range(max(1, lanes))]
        # Made now: files copied from the box for a delta land before the threads start.
        os.makedirs(self.ready_dir, exist_ok=True)

    def start(self) -> "VenvFeed":
        for thread in self._threads:
            thread.start()
        return self

    def landed(self, rel: str, path: str) -> None:
        """A staged file is complete and verified (called from the pass's threads)."""
        if rel in self.wheels:
            # A hard link into the folder uv reads: it only ever holds whole, verified wheels.
            ready = os.path.join(self.ready_dir, os.path.basename(path))
            try:
                os.link(path, ready)
            except OSError as exc:
                if is_disk_full(exc):
                    raise
                shutil.copyfile(path, ready)  # a filesystem without hard links: a copy, once
        with self._cond:
            self.needs.discard(rel)
            if rel in self.wheels:
                self._landed.append(rel)
            self._cond.notify_all()

    def finish(self) -> None:
        """The pass is over and its digests matched: install what is left, then return (or raise uv's error)."""
        with self._cond:
            self._ended = True
            left = len(self.wheels) - self.installed
            self._cond.notify_all()
        with self.progress(left):
            for thread in self._threads:
                thread.join()
            if self.error is None and self._venv_made:
                self.merge()
        if self.error is not None:
            raise self.error
        if self.needs or self.installed != len(self.wheels):
            missing = sorted(self.needs) or sorted(set(self.wheels) - self._given)
            raise ArtifactRejected("the venv was left without %s: it never arrived from the upload" % missing[0],
                                   "run apply again; if it says this again, upload the bundle again")

    def abort(self) -> None:
        """The pass failed: stop after the uv runs under way (whose venv the failed apply removes)."""
        with self._cond:
            self._aborted = self._ended = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    # -- the feeding threads --------------------------------------------------------------

    def _run(self, lane: int) -> None:
        try:
            if not self._venv(lane):
                return
            opened = lane == 0
            while True:
                with self._cond:
                    while not self._ended and self.error is None and not self._enough():
                        self._cond.wait()
                    if self._aborted or self.error is not None:
                        return
                    batch, self._landed = (split_batch(self._landed, self.sizes) if self._ended and len(self._threads) > 1
                                           else (self._landed, []))
                    if not batch:
                        return  # ended, and everything landed was installed
                    self._given.update(batch)
                if not opened:
                    self.open_lane(lane)
                    opened = True
                self._install(batch, lane)
        except BaseException as exc:  # raised to the apply by finish()
            with self._cond:
                if self.error is None:
                    self.error = exc
                self._cond.notify_all()

    def _venv(self, lane: int) -> bool:
        """Lane 0 makes the venv once uv's needs have landed; the others wait for it. False: stop."""
        with self._cond:
            if lane == 0:
                while self.needs and not self._ended:
                    self._cond.wait()
                if self._aborted or self.needs:
                    return False
            else:
                while not self._venv_made and not self._ended and self.error is None:
                    self._cond.wait()
                return self._venv_made and not self._aborted
        self.prepared = self.prepare()
        with self._cond:
            self._venv_made = True
            self._cond.notify_all()
        return True

    def _enough(self) -> bool:
        if not self._landed:
            return False
        if not self.sizes:
            return True
        waiting = [self.sizes.get(rel, 0) for rel in self.wheels if rel not in self._given]
        landed = [self.sizes.get(rel, 0) for rel in self._landed]
        if sum(landed) >= self.min_share * sum(waiting):
            return True
        # With a second lane, a run is started at once on the largest wheel still to install when
        # that one is large (torch): the run lasts as long as it whatever else it is given, and what
        # lands meanwhile goes to the other lane. Waiting for a quarter would only start the
        # longest unpack later (torch is 24% of cosyvoice2-pytorch's wheels).
        return len(self._threads) > 1 and max(landed) >= max(waiting) and max(landed) >= BIG_SHARE * sum(waiting)

    def _install(self, batch: List[str], lane: int) -> None:
        with self._cond:
            self.batches += 1
            number = self.batches
        self.lanes_used.add(lane)
        requirements = os.path.join(os.path.dirname(self.ready_dir), "batch-%d.txt" % number)
        with open(requirements, "w", encoding="utf-8") as out:
            for rel in sorted(batch):
                out.write(self.wheels[rel] + "\n")
        self.install(requirements, self.ready_dir, lane)
        for rel in batch:  # unpacked into uv's cache: its pages go to what the next runs write
            forget_file(os.path.join(self.ready_dir, os.path.basename(rel)))
        with self._cond:
            self.installed += len(batch)
            installed = self.installed
        self.reporter.detail("venv: %d of %d packages installed while the upload is read (batch %d, %d wheels, lane %d)"
                             % (installed, len(self.wheels), number, len(batch), lane))
