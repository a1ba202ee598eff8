"""Install state under <to>/.cosyinstall: the journal of completed steps and the apply lock.

A step is recorded only after it is complete, keyed by the digest of what it installed. A
step that starts first writes `<step>.pending.json` (every path it may touch) and clears its
record; the pending file goes only after the record is back. So after a crash at any moment
the journal tells the next apply which step to redo and which files it may have touched.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional

from cosyinstall.errors import EnvironmentUnsuitable

__all__ = ["StateDir", "ApplyLock", "STATE_NAME"]

STATE_NAME = ".cosyinstall"


class StateDir:
    """Paths, the journal and the recorded manifests inside <to>/.cosyinstall."""

    def __init__(self, to: str) -> None:
        self.to = os.path.abspath(to)
        self.root = os.path.join(self.to, STATE_NAME)
        self.journal_path = os.path.join(self.root, "state.json")

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def ensure(self) -> None:
        os.makedirs(self.root, exist_ok=True)

    def load(self) -> Dict[str, Any]:
        try:
            with open(self.journal_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except (ValueError, UnicodeDecodeError):
            # A torn write cannot happen (we rename), so this is damage: start over safely.
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: Dict[str, Any]) -> None:
        self.write_json("state.json", (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    def steps(self) -> Dict[str, str]:
        steps = self.load().get("steps", {})
        return steps if isinstance(steps, dict) else {}

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

    def _pending_name(self, step: str) -> str:
        return "%s.pending.json" % step

    def pending(self, step: str) -> Optional[List[str]]:
        """Paths an interrupted run of `step` may have touched; None if it was not interrupted."""
        raw = self.read_bytes(self._pending_name(step))
        if raw is None:
            return None
        try:
            paths = json.loads(raw.decode("utf-8")).get("paths", [])
        except (ValueError, UnicodeDecodeError, AttributeError):
            paths = []
        return [p for p in paths if isinstance(p, str)]

    def begin(self, step: str, paths: Iterable[str]) -> None:
        """Record that `step` starts and may touch `paths` (added to any earlier attempt's)."""
        known = set(self.pending(step) or [])
        known.update(paths)
        payload = json.dumps({"step": step, "paths": sorted(known)}, indent=0).encode("utf-8")
        self.write_json(self._pending_name(step), payload)
        self.mark(step, None)

    def finish(self, step: str, digest: str) -> None:
        self.mark(step, digest)
        self.discard_pending(step)

    def discard_pending(self, step: str) -> None:
        try:
            os.unlink(self.path(self._pending_name(step)))
        except FileNotFoundError:
            pass

    # -- small files -----------------------------------------------------------------

    def write_json(self, name: str, payload: bytes) -> None:
        """Write atomically: a reader sees the old or the new content, never a mix."""
        self.ensure()
        target = self.path(name)
        tmp = target + ".tmp"
        try:
            with open(tmp, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise

    def read_bytes(self, name: str) -> Optional[bytes]:
        try:
            with open(self.path(name), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def remove(self, name: str) -> None:
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass


class ApplyLock:
    """Exclusive flock on <to>/.cosyinstall/lock: a second apply waits or refuses.

    The lock is held by the open file, so a child process that inherits `fileno()` (uv,
    on purpose) keeps it held until it exits: an apply killed while uv runs cannot be
    followed by another apply racing the orphaned uv.
    """

    def __init__(self, state: StateDir, wait: bool = False, on_wait: Optional[Callable[[str], None]] = None) -> None:
        self.state = state
        self.wait = wait
        self.on_wait = on_wait
        self.handle = None

    def fileno(self) -> int:
        assert self.handle is not None
        return self.handle.fileno()

    def __enter__(self) -> "ApplyLock":
        import fcntl

        while True:
            self.state.ensure()
            path = self.state.path("lock")
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
                        "another cosyinstall apply is working on %s right now" % self.state.to,
                        "wait for it to finish, or pass --wait",
                    )
                if self.on_wait is not None:
                    self.on_wait("another cosyinstall apply is working on %s; waiting for it to finish" % self.state.to)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            # The holder may have removed the tree (a failed first install cleans up after
            # itself): a lock on a file no longer at that path protects nothing, so retry.
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                self.handle = handle
                return self
            handle.close()

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
