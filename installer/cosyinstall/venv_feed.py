"""uv fed while the upload is read: a new venv is filled with each batch of wheels as they land.

A first install (or a rebuild) would otherwise read the whole packages zip and only then start
uv, leaving uv's half of the work and the read's half one after the other. Here a thread waits
for the members uv needs first (its binary, and the bundled CPython when that is the one
chosen), creates the venv, then runs `uv pip install --no-deps` on whatever wheels the pass
has written and checked against their sha256 since the last run, until the pass ends. Every
batch names its wheels `name==version` from a find-links folder of hard links that holds only
finished wheels, so uv never sees a half-written file and records them as it would from the
whole requirements file.

Nothing here is a commit: the venv belongs to the generation being built aside and the journal
holds the venv step as pending, so a pass that fails (a whole-file digest that does not match
SHA256SUMS) stops the feeding and the failed apply removes the venv as before.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import Any, Callable, Dict, List, Optional, Set

from cosyinstall.errors import ArtifactRejected, is_disk_full
from cosyinstall.pagecache import forget_file
from cosyinstall.progress import Reporter
from cosyinstall.uvprogress import InstallProgress

__all__ = ["VenvFeed"]


class VenvFeed:
    """One feeding thread: `landed(rel, path)` from the pass, `finish()` or `abort()` from the apply.

    `needs` are the staged files the first batch waits for; `prepare()` runs once they are all
    there (it creates the venv) and what it returns is kept as `prepared`; `install(requirements, find_links)` runs one uv batch.
    `wheels` maps each wheel's staged rel path to its requirement line (`name==version`).
    """

    def __init__(self, wheels: Dict[str, str], needs: Set[str], ready_dir: str,
                 prepare: Callable[[], Any], install: Callable[[str, str], None],
                 progress: Callable[[int], InstallProgress], reporter: Reporter,
                 sizes: Optional[Dict[str, int]] = None) -> None:
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
        self.progress = progress
        self.reporter = reporter
        self._cond = threading.Condition()
        self._landed: List[str] = []  # wheel rels written and verified, not yet given to uv
        self._ended = False
        self._aborted = False
        self.error: Optional[BaseException] = None
        self.installed = 0
        self.batches = 0
        self._given: Set[str] = set()
        self._thread = threading.Thread(target=self._run, name="venv-feed", daemon=True)
        # Made now: files copied from the box for a delta land before the thread starts.
        os.makedirs(self.ready_dir, exist_ok=True)

    def start(self) -> "VenvFeed":
        self._thread.start()
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
            self._thread.join()
        if self.error is not None:
            raise self.error
        if self.needs or self.installed != len(self.wheels):
            missing = sorted(self.needs) or sorted(set(self.wheels) - self._given)
            raise ArtifactRejected("the venv was left without %s: it never arrived from the upload" % missing[0],
                                   "run apply again; if it says this again, upload the bundle again")

    def abort(self) -> None:
        """The pass failed: stop after the uv run under way (whose venv the failed apply removes)."""
        with self._cond:
            self._aborted = self._ended = True
            self._cond.notify_all()
        self._thread.join()

    # -- the feeding thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._cond:
                while self.needs and not self._ended:
                    self._cond.wait()
                if self._aborted or self.needs:
                    return
            self.prepared = self.prepare()
            while True:
                with self._cond:
                    while not self._ended and not self._enough():
                        self._cond.wait()
                    if self._aborted:
                        return
                    batch, self._landed = self._landed, []
                    if not batch:
                        return  # ended, and everything landed was installed
                self._install(batch)
        except BaseException as exc:  # raised to the apply by finish()
            self.error = exc

    def _enough(self) -> bool:
        if not self._landed:
            return False
        if not self.sizes:
            return True
        left = sum(self.sizes.get(rel, 0) for rel in self.wheels if rel not in self._given)
        return sum(self.sizes.get(rel, 0) for rel in self._landed) >= self.min_share * left

    def _install(self, batch: List[str]) -> None:
        self.batches += 1
        requirements = os.path.join(os.path.dirname(self.ready_dir), "batch-%d.txt" % self.batches)
        with open(requirements, "w", encoding="utf-8") as out:
            for rel in sorted(batch):
                out.write(self.wheels[rel] + "\n")
        self.install(requirements, self.ready_dir)
        for rel in batch:  # unpacked into uv's cache: its pages go to what the next runs write
            forget_file(os.path.join(self.ready_dir, os.path.basename(rel)))
        self.installed += len(batch)
        self._given.update(batch)
        self.reporter.detail("venv: %d of %d packages installed while the upload is read (batch %d, %d wheels)"
                             % (self.installed, len(self.wheels), self.batches, len(batch)))
