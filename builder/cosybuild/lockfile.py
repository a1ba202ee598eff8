"""The lock file's model: exact files for the target (name, version, file name, size, sha256),
the app commit and the model pins, read from and written to JSON. No URLs.

It has three sections (packages, app, models), and a fourth (python: the bundled CPython)
when the manifest sets `bundle-python`; each carries the digest of the manifest inputs it
was made from, so one part can be re-locked, or packed, without the others.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cosyinstall.errors import ArtifactRejected

from cosybuild.profile import Profile
from cosybuild.resolve import LockedFile

__all__ = ["Lock", "read_lock", "write_lock", "stale_sections", "LOCK_VERSION", "SECTIONS", "OPTIONAL_SECTIONS"]

LOCK_VERSION = 1
SECTIONS = ("packages", "app", "models")
# Sections a manifest may add: python, when it sets [target] bundle-python.
OPTIONAL_SECTIONS = ("python",)


@dataclass
class Lock:
    """One manifest's lock; `digests` holds, per section present, the inputs digest it was made from."""

    manifest: str
    target: dict[str, str]
    digests: dict[str, str] = field(default_factory=dict)
    packages: list[LockedFile] = field(default_factory=list)
    tools: dict[str, LockedFile] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    python: dict[str, Any] = field(default_factory=dict)  # the bundled CPython's pin

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lock-version": LOCK_VERSION, "manifest": self.manifest, "target": self.target}
        if "packages" in self.digests:
            out["packages"] = {
                "inputs-digest": self.digests["packages"],
                "files": [f.to_dict() for f in sorted(self.packages, key=lambda f: f.name)],
                "tools": {k: v.to_dict() for k, v in sorted(self.tools.items())},
            }
        if "app" in self.digests:
            out["app"] = {"inputs-digest": self.digests["app"], **self.app}
        if "models" in self.digests:
            out["models"] = {"inputs-digest": self.digests["models"], "models": self.models}
        if "python" in self.digests:
            out["python"] = {"inputs-digest": self.digests["python"], **self.python}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "Lock":
        try:
            if data.get("lock-version") != LOCK_VERSION:
                raise ArtifactRejected("%s has lock-version %r, expected %d" % (where, data.get("lock-version"), LOCK_VERSION),
                                       "run cosybuild lock")
            lock = cls(str(data["manifest"]), dict(data["target"]))
            if "packages" in data:
                sec = data["packages"]
                lock.digests["packages"] = str(sec["inputs-digest"])
                lock.packages = [LockedFile.from_dict(p) for p in sec["files"]]
                lock.tools = {k: LockedFile.from_dict(v) for k, v in sec.get("tools", {}).items()}
            if "app" in data:
                sec = dict(data["app"])
                lock.digests["app"] = str(sec.pop("inputs-digest"))
                lock.app = sec
            if "models" in data:
                lock.digests["models"] = str(data["models"]["inputs-digest"])
                lock.models = list(data["models"]["models"])
            if "python" in data:
                sec = dict(data["python"])
                lock.digests["python"] = str(sec.pop("inputs-digest"))
                lock.python = sec
            return lock
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactRejected("%s is not a valid lock (%s)" % (where, exc), "run cosybuild lock") from exc


def read_lock(path: Path) -> Lock | None:
    """The lock at `path`, None if there is none; ArtifactRejected if it is not a valid lock."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Lock.from_dict(json.loads(text), str(path))
    except ValueError as exc:
        raise ArtifactRejected("%s is not valid JSON (%s)" % (path, exc), "run cosybuild lock") from exc


def write_lock(lock: Lock, path: Path) -> None:
    """Replace the lock at `path` atomically, in a stable (sorted, indented) form."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(lock.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def stale_sections(lock: Lock, profile: Profile, sections: Iterable[str]) -> tuple[list[str], list[str]]:
    """(missing, stale) among `sections`: missing ones may be locked now, stale ones stop pack."""
    want = profile.section_digests()
    sections = [s for s in sections if s in want]  # python only when the manifest bundles a CPython
    missing = [s for s in sections if s not in lock.digests]
    stale = [s for s in sections if s in lock.digests and lock.digests[s] != want[s]]
    return missing, stale
