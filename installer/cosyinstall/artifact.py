"""The artifact format: MANIFEST.json inside each zip, its entries, and the server spec.

This module is the one definition of the format. cosybuild writes manifests with it and
cosyinstall reads them with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import check_member_name

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "FileEntry",
    "ServerSpec",
    "ArtifactManifest",
    "KINDS",
]

FORMAT = "cosy-offline/1"
MANIFEST_NAME = "MANIFEST.json"
KINDS = ("packages", "models")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _get(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ArtifactRejected("%s has no %r" % (where, key))
    value = data[key]
    if kind is int and isinstance(value, bool):
        raise ArtifactRejected("%s.%s must be %s" % (where, key, kind.__name__))
    if not isinstance(value, kind):
        raise ArtifactRejected("%s.%s must be %s" % (where, key, kind.__name__))
    return value


@dataclass(frozen=True)
class FileEntry:
    """One member of an artifact: its path, exact size, sha256 and whether it is executable."""

    path: str
    size: int
    sha256: str
    executable: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> "FileEntry":
        if not isinstance(data, Mapping):
            raise ArtifactRejected("%s must be an object" % where)
        path = _get(data, "path", str, where)
        size = _get(data, "size", int, where)
        digest = _get(data, "sha256", str, where)
        if size < 0:
            raise ArtifactRejected("%s.size is negative for %s" % (where, path))
        if not _HEX64.match(digest):
            raise ArtifactRejected("%s.sha256 is not 64 lowercase hex digits for %s" % (where, path))
        return cls(path, size, digest, bool(data.get("executable", False)))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.executable:
            out["executable"] = True
        return out


@dataclass(frozen=True)
class ServerSpec:
    """How to start the service and when to call it ready (build manifest's [server])."""

    command: Tuple[str, ...]
    launcher: str = "mpirun"
    port: int = 6008
    ready_log: str = ""
    health_path: str = "/"
    ready_timeout: float = 1800.0
    # No new log line and a closed port for this long is the MPI-hang signature.
    silence_timeout: float = 600.0

    LAUNCHERS = ("mpirun", "direct")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "server") -> "ServerSpec":
        command = data.get("command")
        if not isinstance(command, (list, tuple)) or not command or not all(
            isinstance(c, str) for c in command
        ):
            raise ArtifactRejected("%s.command must be a non-empty list of strings" % where)
        launcher = data.get("launcher", "mpirun")
        if launcher not in cls.LAUNCHERS:
            raise ArtifactRejected(
                "%s.launcher must be one of %s, not %r" % (where, ", ".join(cls.LAUNCHERS), launcher)
            )
        port = data.get("port", 6008)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ArtifactRejected("%s.port must be a TCP port number, not %r" % (where, port))
        health = data.get("health-path", "/")
        if not isinstance(health, str) or not health.startswith("/"):
            raise ArtifactRejected("%s.health-path must start with '/'" % where)
        timeouts = []
        for key, default in (("ready-timeout", 1800.0), ("silence-timeout", 600.0)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ArtifactRejected("%s.%s must be a positive number of seconds" % (where, key))
            timeouts.append(float(value))
        ready_log = data.get("ready-log", "")
        if not isinstance(ready_log, str):
            raise ArtifactRejected("%s.ready-log must be a string" % where)
        return cls(tuple(command), launcher, port, ready_log, health, timeouts[0], timeouts[1])

    def to_dict(self) -> Dict[str, Any]:
        return {
            "command": list(self.command),
            "launcher": self.launcher,
            "port": self.port,
            "ready-log": self.ready_log,
            "health-path": self.health_path,
            "ready-timeout": self.ready_timeout,
            "silence-timeout": self.silence_timeout,
        }

    def argv(self, port: Optional[int] = None) -> List[str]:
        """The command with `{port}` replaced, so a port given at start time reaches the app."""
        chosen = self.port if port is None else port
        return [part.replace("{port}", str(chosen)) for part in self.command]


@dataclass(frozen=True)
class ArtifactManifest:
    """MANIFEST.json: what one zip holds. Any member not listed here makes the zip invalid."""

    kind: str
    name: str
    target: Dict[str, Any]
    files: Tuple[FileEntry, ...]
    meta: Dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> "ArtifactManifest":
        if not isinstance(data, dict):
            raise ArtifactRejected("%s is not a JSON object" % where)
        fmt = data.get("format")
        if not isinstance(fmt, str) or not fmt.startswith("cosy-offline/"):
            raise ArtifactRejected("%s has no cosy-offline format marker" % where)
        if fmt != FORMAT:
            raise ArtifactRejected(
                "%s uses format %s, which this cosyinstall (%s) cannot read" % (where, fmt, FORMAT),
                "use the cosyinstall.pyz shipped with that build",
            )
        kind = _get(data, "kind", str, where)
        if kind not in KINDS:
            raise ArtifactRejected("%s.kind must be one of %s, not %r" % (where, ", ".join(KINDS), kind))
        name = _get(data, "name", str, where)
        target = _get(data, "target", dict, where)
        raw_files = _get(data, "files", list, where)
        files = tuple(
            FileEntry.from_dict(item, "%s.files[%d]" % (where, i)) for i, item in enumerate(raw_files)
        )
        meta = {k: v for k, v in data.items() if k not in ("format", "kind", "name", "target", "files")}
        manifest = cls(kind, name, target, files, meta, fmt)
        manifest.validate(where)
        return manifest

    @classmethod
    def from_bytes(cls, raw: bytes, where: str = MANIFEST_NAME) -> "ArtifactManifest":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArtifactRejected("%s is not valid JSON (%s)" % (where, exc))
        return cls.from_dict(data, where)

    def validate(self, where: str = MANIFEST_NAME) -> None:
        seen = set()
        for entry in self.files:
            check_member_name(entry.path, where)
            if entry.path == MANIFEST_NAME:
                raise ArtifactRejected("%s lists itself as a member" % where)
            key = entry.path.lower()
            if key in seen:
                raise ArtifactRejected("%s lists %s twice" % (where, entry.path))
            seen.add(key)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"format": self.format, "kind": self.kind, "name": self.name, "target": self.target}
        out.update(self.meta)
        out["files"] = [e.to_dict() for e in sorted(self.files, key=lambda e: e.path)]
        return out

    def to_bytes(self) -> bytes:
        """Canonical bytes: sorted keys and members, so equal manifests give equal bytes."""
        return (json.dumps(self.to_dict(), sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def by_path(self) -> Dict[str, FileEntry]:
        return {e.path: e for e in self.files}

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.files)

    def server(self) -> Optional[ServerSpec]:
        raw = self.meta.get("server")
        return ServerSpec.from_dict(raw, "%s server" % self.name) if isinstance(raw, dict) else None
