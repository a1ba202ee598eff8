"""Paths under the install tree, reached without ever following a symbolic link below its root.

The root itself (--to, or pretrained_models/ linked to another disk on purpose) is trusted;
every component below it is opened with O_NOFOLLOW relative to its parent's descriptor, so
a folder the user (or anyone) replaced by a link to elsewhere is never read, changed or
deleted through. A link found where a file or folder belongs is reported, or unlinked itself.
Directory fsyncs (power-cut ordering) live here too.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Iterable, Optional, Tuple

from cosyinstall.streams import hash_stream

__all__ = ["make_dirs", "link_below", "lstat_below", "hash_below", "chmod_below", "fsync_dir", "fsync_dirs",
           "open_nofollow_write"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def make_dirs(path: str) -> None:
    """Create a folder and its parents, mode 0755 whatever the umask."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        make_dirs(parent)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, 0o755)


def _parts(rel: str) -> list:
    return [p for p in rel.replace(os.sep, "/").split("/") if p not in ("", ".")]


def _open_parent(root: str, rel: str) -> Tuple[int, str]:
    """A descriptor of rel's parent, reached without links below root, and rel's last name.

    Raises OSError (ELOOP or ENOTDIR for a link, ENOENT when missing).
    """
    parts = _parts(rel)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def link_below(root: str, rel: str) -> Optional[str]:
    """The first path component of rel (relative, '/'-joined) that is a symbolic link, or None."""
    path = root
    parts = _parts(rel)
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return "/".join(parts[:i + 1])
        if not stat.S_ISDIR(st.st_mode):
            return None
    return None


def lstat_below(root: str, rel: str) -> Optional[os.stat_result]:
    """lstat of root/rel when no folder on the way is a link; None when missing or reached through one."""
    try:
        fd, name = _open_parent(root, rel)
    except OSError:
        return None
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    finally:
        os.close(fd)


def hash_below(root: str, rel: str) -> Optional[Tuple[int, str]]:
    """(size, sha256) of the regular file root/rel, never through a link; None otherwise."""
    try:
        parent, name = _open_parent(root, rel)
    except OSError:
        return None
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return hash_stream(handle)


def chmod_below(root: str, rel: str, mode: int) -> None:
    """chmod the regular file root/rel (only if its mode differs), never through a link."""
    parent, name = _open_parent(root, rel)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.path.join(root, rel))
        if (st.st_mode & 0o7777) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def open_nofollow_write(path: str) -> int:
    """A new file for writing at path (a link or file planted there is removed first, never written through)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o644)


def fsync_dir(path: str) -> None:
    """Make the renames and creations in a folder durable (power-cut ordering)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)


def fsync_dirs(paths: Iterable[str]) -> None:
    # Deepest first: a created folder's own entries before the entry naming it in its parent.
    for path in sorted(set(paths), key=lambda p: (-p.count(os.sep), p)):
        fsync_dir(path)
