"""The lock: exact files for the target (name, version, file name, size, sha256), the app
commit and model pins, plus the digest of the manifest inputs it was made from. No URLs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosyinstall.errors import ArtifactRejected

from cosybuild.profile import Profile
from cosybuild.resolve import LockedFile

__all__ = ["Lock", "read_lock", "write_lock", "check_fresh", "LOCK_VERSION"]

LOCK_VERSION = 1


@dataclass
class Lock:
    manifest: str
    inputs_digest: str
    target: dict[str, str]
    packages: list[LockedFile]
    tools: dict[str, LockedFile] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lock-version": LOCK_VERSION,
            "manifest": self.manifest,
            "inputs-digest": self.inputs_digest,
            "target": self.target,
            "packages": [f.to_dict() for f in sorted(self.packages, key=lambda f: f.name)],
            "tools": {k: v.to_dict() for k, v in sorted(self.tools.items())},
            "app": self.app,
            "models": self.models,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "Lock":
        try:
            if data.get("lock-version") != LOCK_VERSION:
                raise ArtifactRejected("%s has lock-version %r, expected %d" % (where, data.get("lock-version"), LOCK_VERSION),
                                       "run cosybuild lock")
            return cls(
                str(data["manifest"]), str(data["inputs-digest"]), dict(data["target"]),
                [LockedFile.from_dict(p) for p in data["packages"]],
                {k: LockedFile.from_dict(v) for k, v in data.get("tools", {}).items()},
                dict(data.get("app", {})), list(data.get("models", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactRejected("%s is not a valid lock (%s)" % (where, exc), "run cosybuild lock")


def read_lock(path: Path) -> Lock | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Lock.from_dict(json.loads(text), str(path))
    except ValueError as exc:
        raise ArtifactRejected("%s is not valid JSON (%s)" % (path, exc), "run cosybuild lock")


def write_lock(lock: Lock, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(lock.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_fresh(lock: Lock, profile: Profile, path: Path) -> None:
    if lock.inputs_digest != profile.inputs_digest():
        raise ArtifactRejected("%s no longer matches %s" % (path, profile.path),
                               "run cosybuild lock %s" % profile.name)
