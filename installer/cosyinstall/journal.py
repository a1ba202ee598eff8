"""Install state under <to>/.cosyinstall: the journal of completed steps and the apply lock.

A step is recorded only after it is complete, keyed by the digest of the manifest it came
from, so a crash at any moment leaves a journal that tells the next apply what to redo.
"""

from __future__ import annotations

import errno
import json
import os
from typing import Any, Dict, Optional

from cosyinstall.errors import EnvironmentUnsuitable

__all__ = ["StateDir", "ApplyLock"]


class StateDir:
    """Paths and the journal inside <to>/.cosyinstall."""

    def __init__(self, to: str) -> None:
        self.to = os.path.abspath(to)
        self.root = os.path.join(self.to, ".cosyinstall")
        self.journal_path = os.path.join(self.root, "state.json")

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def ensure(self) -> None:
        os.makedirs(self.root, exist_ok=True)

    def load(self) -> Dict[str, Any]:
        try:
            with open(self.journal_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except ValueError:
            # A torn write cannot happen (we rename), so this is damage: start over safely.
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: Dict[str, Any]) -> None:
        self.ensure()
        tmp = self.journal_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.journal_path)

    def step_done(self, step: str) -> Optional[str]:
        return self.load().get("steps", {}).get(step)

    def mark(self, step: str, digest: Optional[str]) -> None:
        data = self.load()
        steps = data.setdefault("steps", {})
        if digest is None:
            steps.pop(step, None)
        else:
            steps[step] = digest
        self.save(data)

    def write_json(self, name: str, payload: bytes) -> None:
        self.ensure()
        tmp = self.path(name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path(name))

    def read_bytes(self, name: str) -> Optional[bytes]:
        try:
            with open(self.path(name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None


class ApplyLock:
    """Exclusive flock on <to>/.cosyinstall/lock: a second apply waits or refuses."""

    def __init__(self, state: StateDir, wait: bool = False) -> None:
        self.state = state
        self.wait = wait
        self.handle = None

    def __enter__(self) -> "ApplyLock":
        import fcntl

        self.state.ensure()
        self.handle = open(self.state.path("lock"), "a+")
        flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(self.handle.fileno(), flags)
        except OSError as exc:
            self.handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise EnvironmentUnsuitable(
                    "another cosyinstall is working on %s right now" % self.state.to,
                    "wait for it to finish, or pass --wait",
                )
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()
