"""Progress while uv installs: packages done of total and the time elapsed.

uv prints nothing until it finishes when its own progress bars are off (they are: its output
goes to the install log). Its work is visible on disk instead: each installed distribution
adds a `*.dist-info` folder to the venv's site-packages, so a thread counts those that were
not there when uv started, against the number of packages the requirements name.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from typing import Callable, Optional, Sequence, Set

from cosyinstall.progress import Reporter, _eta as _elapsed
from cosyinstall.tree import InstallTree

__all__ = ["count_requirements", "InstallProgress"]


def count_requirements(requirements: Optional[str], files: Sequence[str] = ()) -> int:
    """How many packages a requirements file (one `name==version --hash ...` a line) and wheel files name."""
    total = len(files)
    if requirements is None:
        return total
    try:
        with open(requirements, encoding="utf-8") as handle:
            for line in handle:
                text = line.strip()
                if text and not text.startswith(("#", "-", "--")):
                    total += 1
    except OSError:
        pass
    return total


def _dist_infos(roots: Sequence[str]) -> Set[str]:
    """Names of the dist-info folders in the venvs at `roots` (a name moved between them counts once)."""
    return {os.path.basename(path) for root in roots
            for path in glob.glob(os.path.join(root, "lib", "python*", "site-packages", "*.dist-info"))}


class InstallProgress:
    """A context: counts new dist-info folders every `interval` s and reports `label: N of M, T`."""

    def __init__(self, tree: InstallTree, total: int, reporter: Reporter, label: str = "installing packages",
                 interval: float = 0.5, lanes: Callable[[], Sequence[str]] = lambda: ()) -> None:
        self.tree = tree
        self.lanes = lanes  # side venvs uv fills beside the venv (venv_lanes.py), counted with it
        self.total = total
        self.reporter = reporter
        self.label = label
        self.interval = interval
        self._before: Set[str] = set()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._start = 0.0
        self._last_line = 0.0

    def done(self) -> int:
        return min(len(self._now() - self._before), self.total)

    def _now(self) -> Set[str]:
        return _dist_infos([self.tree.venv] + list(self.lanes()))

    def line(self) -> str:
        return "%s: %d of %d, %s" % (self.label, self.done(), self.total, _elapsed(time.monotonic() - self._start))

    def _show(self, final: bool) -> None:
        reporter = self.reporter
        text = self.line()
        if reporter.quiet:
            pass
        elif reporter.live:
            reporter.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            reporter.stream.flush()
        elif final or time.monotonic() - self._last_line >= reporter.line_interval:
            self._last_line = time.monotonic()
            reporter.stream.write(text + "\n")
            reporter.stream.flush()
        if final:
            reporter._log(text)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._show(final=False)

    def __enter__(self) -> "InstallProgress":
        self._before = self._now()
        self._start = self._last_line = time.monotonic()
        if self.total:
            self._thread = threading.Thread(target=self._loop, name="uv-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if exc_type is None:
                self._show(final=True)
            elif self.reporter.live and not self.reporter.quiet:
                self.reporter.stream.write("\r\x1b[K")
                self.reporter.stream.flush()
