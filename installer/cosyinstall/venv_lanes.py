"""Side venvs that uv fills at the same time as the venv being built, then moved into it.

uv holds a lock on a venv for a whole `uv pip install` run, and unpacks each wheel on one
thread: while the run that holds torch is unpacking it, a second run into the same venv waits,
and the box's other cores sit idle. A lane is a second venv made by the same uv from the same
CPython, with the same options (relocatable), beside the venv: it has its own lock, so uv fills
it while the first run goes on. What uv installs there is byte for byte what it would have
installed in the venv (same interpreter, same layout, launchers relative to their own bin/),
and every file lands at the same path relative to the venv's root; so once every run has ended
the lane's files are moved into the venv by rename, and the lane's own venv files (its python
links, activate scripts, pyvenv.cfg) are left behind with it.

Lanes live in the state's work folder (the uv cache's filesystem, which uv already requires to
be the venv's for hard links); a crash leaves them there, and the next apply clears them with
the rest of its scratch.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Callable, Dict, List, Set

from cosyinstall.errors import ArtifactRejected
from cosyinstall.extract import move_over, rmtree

__all__ = ["Lanes", "move_into"]


def _files_below(root: str) -> Set[str]:
    """Paths (relative to root) of everything below it that is not a real folder."""
    found: Set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(os.path.normpath(os.path.join(rel, name)))
    return found


def _move_folder(src: str, dst: str) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copytree(src, dst, symlinks=True)  # the work folder on another filesystem: a copy, once
        rmtree(src)


def move_into(src: str, dst: str, keep: Set[str], rel: str = "") -> int:
    """Move everything below `src` into `dst` except the files named in `keep`; returns how many entries moved.

    A folder absent from `dst` moves whole (one rename); one present in both is merged; a file
    present in both is replaced, as uv replaces a file a later wheel installs again.
    """
    moved = 0
    with os.scandir(src) as entries:
        listed = sorted(entries, key=lambda e: e.name)
    for entry in listed:
        name = os.path.join(rel, entry.name) if rel else entry.name
        target = os.path.join(dst, entry.name)
        if entry.is_dir(follow_symlinks=False):
            if os.path.isdir(target) and not os.path.islink(target):
                moved += move_into(entry.path, target, keep, name)
            elif os.path.lexists(target):
                # Two wheels of the lock disagree on what this path is; one uv run would fail on it too.
                raise ArtifactRejected("%s is a file in the venv but a folder in a package installed beside it" % target,
                                       "two packages of the lock install the same path; fix the package set and pack again")
            elif not any(k.startswith(name + os.sep) for k in keep):
                _move_folder(entry.path, target)
                moved += 1
            else:  # holds lane-only files: made anew, entry by entry
                os.mkdir(target)
                moved += move_into(entry.path, target, keep, name)
        elif name not in keep:
            move_over(entry.path, target)
            moved += 1
    return moved


class Lanes:
    """The side venvs of one venv: `open(k)` makes lane k, `python(k)` is its interpreter, `merge()` moves them in."""

    def __init__(self, venv: str, work: str, create: Callable[[str], None]) -> None:
        self.venv = venv
        self.work = work
        self.create = create  # makes a venv at the given path, as the venv itself was made
        self._own: Dict[int, Set[str]] = {}

    def path(self, lane: int) -> str:
        return os.path.join(self.work, "venv-lane-%d" % lane)

    def python(self, lane: int) -> str:
        return os.path.join(self.path(lane), "bin", "python")

    def roots(self) -> List[str]:
        """The lanes opened so far (for counting what uv installed in them)."""
        return [self.path(k) for k in sorted(self._own)]

    def open(self, lane: int) -> None:
        path = self.path(lane)
        rmtree(path)
        os.makedirs(self.work, exist_ok=True)
        self.create(path)
        # What the venv itself already has: these stay behind when the lane is merged.
        self._own[lane] = _files_below(path) | {".lock"}

    def merge(self) -> int:
        """Move what uv installed in every lane into the venv, then remove the lanes; returns entries moved."""
        moved = 0
        for lane in sorted(self._own):
            moved += move_into(self.path(lane), self.venv, self._own[lane])
        self.discard()
        return moved

    def discard(self) -> None:
        for lane in sorted(self._own):
            rmtree(self.path(lane))
        self._own.clear()
