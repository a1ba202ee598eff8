"""Local folders as sorted (relative path, absolute path, executable) triples, and the include/exclude rule.

Used for the app tree and local models, which are packed as they are on disk; the hubs
apply the same include/exclude rule (`wanted`) to their listings.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
from pathlib import Path
from typing import Iterable

__all__ = ["TreeFile", "walk_tree", "wanted", "SKIP_DIRS"]

SKIP_DIRS = {".git", "__pycache__", ".cache", ".mypy_cache", ".pytest_cache"}

TreeFile = tuple[str, Path, bool]


def wanted(path: str, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> bool:
    """The include/exclude rule: a glob matches the whole relative path or the file's base name."""
    include, exclude = list(include), list(exclude)

    def hit(patterns: list[str]) -> bool:
        base = posixpath.basename(path)
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(base, p) for p in patterns)

    return (not include or hit(include)) and not (exclude and hit(exclude))


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
            if not wanted(rel, include, exclude):
                continue
            try:
                st = full.stat()
            except OSError:
                continue  # a dangling symlink carries nothing to install
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append((rel, full, bool(st.st_mode & 0o111)))
    return sorted(out)
