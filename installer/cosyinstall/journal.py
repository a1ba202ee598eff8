"""The journal of completed install steps and the apply lock, both under <to>/.cosyinstall.

A step is recorded only after it is complete, keyed by the digest of what it installed. A
step that starts first writes `<step>.pending.json` (every path it may touch) and clears its
record; the pending file goes only after the record is back. So after a crash at any moment
the journal tells the next apply which step to redo and which files it may have touched.

The small-file helpers (`write_atomic`, `read_small`) are the one way install state is
written and read, so a reader never sees a half-written file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from typing import IO, Any, Callable, Dict, Iterable, List, Optional

from cosyinstall.boundedjson import JsonRefused, loads_bounded, read_bounded
from cosyinstall.errors import EnvironmentUnsuitable
from cosyinstall.safepath import fsync_dir, open_nofollow_write
from cosyinstall.tree import InstallTree

__all__ = ["Journal", "ApplyLock", "write_atomic", "read_small", "read_json_object", "json_bytes", "remove_file"]


def write_atomic(path: str, payload: bytes) -> None:
    """Write atomically: a reader sees the old or the new content, never a mix."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _clear_folder(path)
    tmp = path + ".tmp"
    _clear_folder(tmp)
    try:
        # A link planted at the temporary name is replaced, never written through.
        with os.fdopen(open_nofollow_write(tmp), "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        # The rename itself durable before anything that depends on it (a step's "done").
        fsync_dir(os.path.dirname(path))
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def read_small(path: str) -> Optional[bytes]:
    """A small state file's bytes, or None when it does not exist or is not a plausible state file.

    A folder, or a file larger than any state file we write, at that path is damage: the
    callers treat None as "unknown, redo", which is safe.
    """
    try:
        with open(path, "rb") as handle:
            return read_bounded(handle)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, JsonRefused):
        return None


def read_json_object(path: str) -> Optional[Dict[str, Any]]:
    """A JSON object from a state file; None when missing or damaged (damage means: redo, which is safe)."""
    raw = read_small(path)
    if raw is None:
        return None
    try:
        data = loads_bounded(raw)
    except JsonRefused:
        return None
    return data if isinstance(data, dict) else None


def _clear_folder(path: str) -> None:
    """A folder where a state file belongs (damage) would make the rename onto it fail: remove it."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


def remove_file(path: str) -> None:
    """Remove a state file; a folder at its path (damage) goes too."""
    _clear_folder(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Journal:
    """state.json (completed steps, verified uploads) and the pending files of steps in progress."""

    def __init__(self, tree: InstallTree) -> None:
        self.tree = tree

    def ensure(self) -> None:
        os.makedirs(self.tree.state, exist_ok=True)

    def load(self) -> Dict[str, Any]:
        # A torn write cannot happen (we rename), so a damaged file is damage: start over safely.
        # Parts of the wrong type are damage too: dropped, so the steps they named are redone.
        data = read_json_object(self.tree.journal) or {}
        for key, kind in (("steps", str), ("uploads", dict)):
            if key in data:
                part = data[key]
                data[key] = {k: v for k, v in part.items() if isinstance(v, kind)} if isinstance(part, dict) else {}
        return data

    def save(self, data: Dict[str, Any]) -> None:
        write_atomic(self.tree.journal, json_bytes(data))

    def steps(self) -> Dict[str, str]:
        return self.load().get("steps", {})

    def step_done(self, step: str) -> Optional[str]:
        return self.steps().get(step)

    def mark(self, step: str, digest: Optional[str]) -> None:
        data = self.load()
        steps = data.setdefault("steps", {})
        if digest is None:
            steps.pop(step, None)
        else:
            steps[step] = digest
        self.save(data)

    # -- steps in progress ---------------------------------------------------------------

    def _pending_path(self, step: str) -> str:
        return self.tree.record_path("%s.pending.json" % step)

    def pending(self, step: str) -> Optional[List[str]]:
        """Paths an interrupted run of `step` may have touched; None if it was not interrupted."""
        raw = read_small(self._pending_path(step))
        if raw is None:
            return None
        try:
            data = loads_bounded(raw)
        except JsonRefused:
            data = None
        paths = data.get("paths") if isinstance(data, dict) else None
        return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []

    def begin(self, step: str, paths: Iterable[str]) -> None:
        """Record that `step` starts and may touch `paths` (added to any earlier attempt's)."""
        known = set(self.pending(step) or [])
        known.update(paths)
        payload = json.dumps({"step": step, "paths": sorted(known)}, indent=0).encode("utf-8")
        write_atomic(self._pending_path(step), payload)
        self.mark(step, None)

    def finish(self, step: str, digest: str) -> None:
        self.mark(step, digest)
        self.discard_pending(step)

    def discard_pending(self, step: str) -> None:
        remove_file(self._pending_path(step))


class ApplyLock:
    """Exclusive flock on <to>/.cosyinstall/lock: a second apply waits or refuses.

    The lock is held by the open file, so a child process that inherits `fileno()` (uv,
    on purpose) keeps it held until it exits: an apply killed while uv runs cannot be
    followed by another apply racing the orphaned uv.
    """

    def __init__(self, tree: InstallTree, wait: bool = False, on_wait: Optional[Callable[[str], None]] = None) -> None:
        self.tree = tree
        self.wait = wait
        self.on_wait = on_wait
        self.handle: Optional[IO[str]] = None

    def fileno(self) -> int:
        assert self.handle is not None
        return self.handle.fileno()

    @property
    def held(self) -> bool:
        return self.handle is not None

    def __enter__(self) -> "ApplyLock":
        self.acquire()
        return self

    def acquire(self) -> None:
        import fcntl

        while True:
            os.makedirs(self.tree.state, exist_ok=True)
            path = self.tree.lock
            _clear_folder(path)  # a folder there is damage; the lock file itself holds nothing
            handle = open(path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    handle.close()
                    raise
                if not self.wait:
                    handle.close()
                    raise EnvironmentUnsuitable(
                        "another cosyinstall apply is working on %s right now" % self.tree.visible,
                        "wait for it to finish, or pass --wait",
                    ) from exc
                if self.on_wait is not None:
                    self.on_wait("another cosyinstall apply is working on %s; waiting for it to finish"
                                 % self.tree.visible)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            # The holder may have removed the tree (a failed first install cleans up after
            # itself): a lock on a file no longer at that path protects nothing, so retry.
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                self.handle = handle
                return
            handle.close()

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def __exit__(self, *exc: object) -> None:
        self.release()
