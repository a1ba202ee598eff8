"""Verified extraction into a staging directory, then a move into place.

Every member is streamed once through copy_verified (sized, hashed); only a complete staging
tree is published, file by file with os.replace on the same filesystem.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Iterable, List, Optional

from cosyinstall.artifact import FileEntry
from cosyinstall.errors import EnvironmentUnsuitable
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.zipread import ArtifactReader

__all__ = ["extract_entries", "publish", "remove_stale", "rmtree", "disk_full"]


def rmtree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def disk_full(exc: OSError, path: str) -> EnvironmentUnsuitable:
    return EnvironmentUnsuitable(
        "the disk filled up while writing %s" % path, "free some space and run apply again; nothing was installed"
    )


def _inside(root: str, rel: str) -> str:
    target = os.path.normpath(os.path.join(root, rel))
    if os.path.commonpath([root, target]) != root:
        # names.py already refused such names; this guards against a future bypass.
        raise EnvironmentUnsuitable("refusing to write %s outside %s" % (rel, root))
    return target


def extract_entries(
    reader: ArtifactReader,
    entries: Iterable[FileEntry],
    dest: str,
    strip: str = "",
    reporter: Optional[Reporter] = None,
) -> List[str]:
    """Write entries (with `strip` removed from their paths) under dest; returns relative paths."""
    reporter = reporter or NullReporter()
    chosen = list(entries)
    dest = os.path.abspath(dest)
    os.makedirs(dest, exist_ok=True)
    written: List[str] = []
    total = sum(e.size for e in chosen)
    with reporter.task("extracting %s" % reader.label, total) as task:
        for entry in chosen:
            rel = entry.path[len(strip):] if strip and entry.path.startswith(strip) else entry.path
            target = _inside(dest, rel)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as out:
                    reader.copy_member(entry, out, task.advance)
                os.chmod(target, 0o755 if entry.executable else 0o644)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise disk_full(exc, target)
                raise
            written.append(rel)
    return written


def publish(staging: str, dest: str, rel_paths: Iterable[str]) -> None:
    """Move staged files into dest, replacing what is there; parents are created as needed."""
    dest = os.path.abspath(dest)
    for rel in rel_paths:
        target = _inside(dest, rel)
        parent = os.path.dirname(target)
        if os.path.lexists(parent) and not os.path.isdir(parent):
            os.unlink(parent)
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        os.replace(os.path.join(staging, rel), target)


def remove_stale(dest: str, old: Iterable[str], new: Iterable[str]) -> List[str]:
    """Delete files the previous version listed and the new one does not; prune empty dirs."""
    dest = os.path.abspath(dest)
    keep = set(new)
    removed: List[str] = []
    for rel in sorted(set(old) - keep):
        target = _inside(dest, rel)
        if os.path.lexists(target) and not os.path.isdir(target):
            os.unlink(target)
            removed.append(rel)
            parent = os.path.dirname(target)
            while parent != dest and os.path.isdir(parent) and not os.listdir(parent):
                os.rmdir(parent)
                parent = os.path.dirname(parent)
    return removed
