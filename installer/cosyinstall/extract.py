"""Verified extraction into a staging directory, then a move into place.

Every member is streamed once through copy_verified (sized, hashed); only a complete staging
tree is published, file by file with os.replace on the same filesystem, so a file in <to>
is always either its old or its new version, never a half-written one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from typing import IO, Any, Callable, Iterable, List, Optional, Protocol

from cosyinstall.artifact import FileEntry
from cosyinstall.errors import DiskFull, EnvironmentUnsuitable, is_disk_full
from cosyinstall.install_plan import Item
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.safepath import chmod_below, fsync_dirs, link_below, make_dirs

__all__ = [
    "stage_items",
    "extract_entries",
    "publish",
    "remove_paths",
    "set_mode",
    "rmtree",
    "move_over",
    "inside",
    "write_atomically",
]


def rmtree(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def inside(root: str, rel: str) -> str:
    target = os.path.normpath(os.path.join(root, rel))
    if os.path.commonpath([root, target]) != root or target == root:
        # names.py already refused such names; this guards against a future bypass.
        raise EnvironmentUnsuitable("refusing to write %s outside %s" % (rel, root))
    return target


class _Reader(Protocol):
    """What stage_items needs of an artifact reader (zipread or handmade)."""

    label: str

    def copy(self, key: str, size: int, sha256: Optional[str], dst: Optional[IO[bytes]],
             advance: Optional[Callable[[int], None]] = None) -> str: ...

    def mtime(self, key: str) -> float: ...


def set_mode(root: str, rel: str, executable: bool) -> None:
    """The installer's mode for root/rel, never changed through a link below root."""
    chmod_below(root, rel, 0o755 if executable else 0o644)


def stage_items(reader: _Reader, items: Iterable[Item], staging: str, reporter: Optional[Reporter] = None,
                durable: bool = False) -> List[FileEntry]:
    """Write items under staging (at their `rel`); returns entries with the digests seen.

    `durable`: each file is fsynced, because it will be renamed into the tree (power-cut ordering).
    """
    reporter = reporter or NullReporter()
    chosen = list(items)
    staging = os.path.abspath(staging)
    os.makedirs(staging, exist_ok=True)
    written: List[FileEntry] = []
    with reporter.task("extracting %s" % reader.label, sum(i.size for i in chosen)) as task:
        for item in chosen:
            target = inside(staging, item.rel)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as out:
                    digest = reader.copy(item.key, item.size, item.sha256, out, task.advance)
                    if durable:
                        out.flush()
                        os.fsync(out.fileno())
                os.chmod(target, 0o755 if item.executable else 0o644)
                # The member's own time, as unzip does: two installs of one zip are then
                # identical, down to uv's records of the wheels' times.
                stamp = reader.mtime(item.key)
                os.utime(target, (stamp, stamp))
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFull(target) from None
                raise
            written.append(FileEntry(item.rel, item.size, digest, item.executable))
    return written


def extract_entries(
    reader: _Reader,
    entries: Iterable[FileEntry],
    dest: str,
    strip: str = "",
    reporter: Optional[Reporter] = None,
) -> List[str]:
    """Write manifest entries (with `strip` removed from their paths) under dest; returns relative paths."""
    items = [Item(e.path, e.path[len(strip):] if strip and e.path.startswith(strip) else e.path,
                  e.size, e.sha256, e.executable) for e in entries]
    return [e.path for e in stage_items(reader, items, dest, reporter)]


def publish(staging: str, dest: str, rel_paths: Iterable[str]) -> None:
    """Move staged files into dest, replacing what is there; parents are created as needed."""
    dest = os.path.abspath(dest)
    touched = set()
    for rel in rel_paths:
        target = inside(dest, rel)
        parent = os.path.dirname(target)
        touched.update(_make_parent(dest, parent))
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        move_over(os.path.join(staging, rel), target)
        touched.add(parent)
    # Power-cut ordering: every rename (and new folder) durable before the journal records the step.
    fsync_dirs(touched)


def move_over(src: str, target: str) -> None:
    """os.replace; across filesystems (pretrained_models linked to another disk) copy beside, then replace."""
    try:
        os.replace(src, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = target + ".cosyinstall-part"
        try:
            shutil.copy2(src, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        os.unlink(src)


def _make_parent(root: str, parent: str) -> List[str]:
    """Create parent, replacing any file (or link) that stands where a directory must be.

    Returns the folders whose entries changed (to be fsynced).
    """
    changed: List[str] = []
    if not os.path.isdir(root):
        make_dirs(root)
        changed.append(os.path.dirname(root))
    path = root
    for part in os.path.relpath(parent, root).split(os.sep):
        if part in ("", "."):
            continue
        up, path = path, os.path.join(path, part)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            os.unlink(path)
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)
            changed.append(up)
    return changed


def remove_paths(dest: str, rels: Iterable[str]) -> List[str]:
    """Delete these files under dest and prune directories they leave empty."""
    dest = os.path.abspath(dest)
    removed: List[str] = []
    for rel in sorted(set(rels)):
        target = inside(dest, rel)
        link = link_below(dest, rel)
        if link is not None and link != rel:
            # A folder on the way was replaced by a link: unlink the link, never what it points to.
            os.unlink(inside(dest, link))
            continue
        if os.path.lexists(target) and not (os.path.isdir(target) and not os.path.islink(target)):
            os.unlink(target)
            removed.append(rel)
        parent = os.path.dirname(target)
        while parent != dest and os.path.isdir(parent) and not os.listdir(parent):
            os.rmdir(parent)
            parent = os.path.dirname(parent)
    return removed


def write_atomically(target: str, tmp: str, write: Callable[[IO[bytes]], Any], executable: bool) -> None:
    """Write a temp file in `tmp` (same filesystem), then rename: `target` is the old file or the whole new one."""
    fd, part = tempfile.mkstemp(prefix="file.", dir=tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            os.fchmod(out.fileno(), 0o755 if executable else 0o644)
            out.flush()
            os.fsync(out.fileno())  # on disk before the rename (power-cut ordering)
        os.replace(part, target)
        fsync_dirs([os.path.dirname(target)])
    except BaseException as exc:
        if os.path.exists(part):
            os.unlink(part)
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise DiskFull(target) from None
        raise
