"""Walk a local directory into (relative path, absolute path, executable) triples, sorted."""

from __future__ import annotations

import fnmatch
import os
import stat
from pathlib import Path
from typing import Iterable

__all__ = ["TreeFile", "walk_tree", "SKIP_DIRS"]

SKIP_DIRS = {".git", "__pycache__", ".cache", ".mypy_cache", ".pytest_cache"}

TreeFile = tuple[str, Path, bool]


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(os.path.basename(rel), p) for p in patterns)


def walk_tree(root: Path, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[TreeFile]:
    """Regular files under root; symlinks to files are followed, .git and caches are skipped."""
    include, exclude = list(include), list(exclude)
    out: list[TreeFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name == ".git" or name.endswith(".pyc"):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if include and not _matches(rel, include):
                continue
            if exclude and _matches(rel, exclude):
                continue
            try:
                st = full.stat()
            except OSError:
                continue  # a dangling symlink carries nothing to install
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append((rel, full, bool(st.st_mode & 0o111)))
    return sorted(out)
