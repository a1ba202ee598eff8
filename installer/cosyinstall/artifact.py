"""The artifact contract: upload file names, member prefixes, MANIFEST.json and its records.

This module is the one definition of the format. cosybuild writes manifests with it and
cosyinstall reads them with it: the names of the uploaded files, where members live inside
each zip, the manifest with its file entries, and a typed record (reader and writer) for
every part of the manifest's metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from cosyinstall.boundedjson import JsonRefused, loads_bounded
from cosyinstall.errors import ArtifactRejected
from cosyinstall.nameclash import check_no_clash
from cosyinstall.names import check_member_name

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "PACKAGES_ZIP",
    "MODELS_ZIP",
    "PYZ_NAME",
    "SUMS_NAME",
    "SIG_NAME",
    "SIG_NAMESPACE",
    "BUILD_ID_KEY",
    "KIND_OF",
    "APP_PREFIX",
    "WHEELS_DIR",
    "UV_REL",
    "REQUIREMENTS_REL",
    "PYTHON_PREFIX",
    "BundledPython",
    "DELTA_FORMAT",
    "DeltaBase",
    "FileEntry",
    "PrepareStep",
    "ProbeSpec",
    "GpuRequirement",
    "ServerSpec",
    "ArtifactManifest",
    "PackageRecord",
    "UvRecord",
    "AppRecord",
    "ModelSteps",
    "ModelRecord",
    "Duplicate",
    "PackagesMeta",
    "ModelsMeta",
    "KINDS",
]

FORMAT = "cosy-offline/1"
# A delta artifact: an installer that knows only FORMAT refuses it with "uses format ...-delta,
# which this cosyinstall cannot read" instead of taking its missing members for damage.
DELTA_FORMAT = "cosy-offline/1-delta"
MANIFEST_NAME = "MANIFEST.json"
KINDS = ("packages", "models")

# The uploads: what cosybuild pack writes and what cosyinstall looks for in --from.
PACKAGES_ZIP = "offline_packages.zip"
MODELS_ZIP = "pretrained_models.zip"
PYZ_NAME = "cosyinstall.pyz"
SUMS_NAME = "SHA256SUMS"
SIG_NAME = "SHA256SUMS.sig"                 # `ssh-keygen -Y sign` of SHA256SUMS's bytes
SIG_NAMESPACE = "cosy-offline-bundle@v1"    # the -n of that signature: a bundle signature, nothing else
BUILD_ID_KEY = "build-id"                   # MANIFEST.json: the build this artifact belongs to
KIND_OF = {PACKAGES_ZIP: "packages", MODELS_ZIP: "models"}

# Members of offline_packages.zip (a models zip holds one directory per model).
APP_PREFIX = "app/"
WHEELS_DIR = "wheels"
UV_REL = "uv/uv"
REQUIREMENTS_REL = "requirements.txt"
PYTHON_PREFIX = "python/"              # the bundled CPython's archive
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


def _rel_path(value: Any, where: str) -> str:
    """A path under the install root given relative to it: no absolute path, no '..'."""
    if not isinstance(value, str) or not value:
        raise ArtifactRejected("%s must be a path relative to the install root" % where)
    check_member_name(value.rstrip("/"), where)
    return value.rstrip("/")


def _positive(data: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ArtifactRejected("%s.%s must be a positive number of seconds" % (where, key))
    return float(value)


@dataclass(frozen=True)
class PrepareStep:
    """One `[[server.prepare]]` step: a command run before the server (an engine build, say).

    `creates` proves it done; `clean` is removed before a retry; a `gpu_keyed` step's output is
    valid only on the GPU it was built on. Paths are relative to the install root.
    """

    name: str
    command: Tuple[str, ...]
    creates: str
    clean: Tuple[str, ...] = ()
    timeout: float = 3600.0
    gpu_keyed: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "PrepareStep":
        data = _object(data, where)
        name = _get(data, "name", str, where)
        command = data.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise ArtifactRejected("%s.command must be a non-empty list of strings" % where)
        creates = _rel_path(data.get("creates"), "%s.creates" % where)
        clean = data.get("clean", [])
        if not isinstance(clean, list):
            raise ArtifactRejected("%s.clean must be a list of paths" % where)
        cleaned = tuple(_rel_path(c, "%s.clean" % where) for c in clean)
        gpu_keyed = data.get("gpu-keyed", False)
        if not isinstance(gpu_keyed, bool):
            raise ArtifactRejected("%s.gpu-keyed must be true or false" % where)
        return cls(name, tuple(command), creates, cleaned, _positive(data, "timeout", 3600.0, where), gpu_keyed)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "command": list(self.command), "creates": self.creates,
                "clean": list(self.clean), "timeout": self.timeout, "gpu-keyed": self.gpu_keyed}


@dataclass(frozen=True)
class ProbeSpec:
    """`[server.probe]`: one real request (a synthesis) that must succeed before the server counts as ready.

    `form` or `json` is the body; `files` (field -> path under the install root) makes the form
    multipart; `expect` is a Content-Type prefix ("" accepts any); `min_bytes` the least body.
    """

    path: str
    method: str = "POST"
    form: Tuple[Tuple[str, str], ...] = ()
    json_body: Optional[str] = None        # canonical JSON text, so the record stays hashable
    files: Tuple[Tuple[str, str], ...] = ()
    expect: str = ""
    min_bytes: int = 1
    timeout: float = 120.0

    METHODS = ("GET", "POST", "PUT")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ProbeSpec":
        data = _object(data, where)
        path = _get(data, "path", str, where)
        if not path.startswith("/"):
            raise ArtifactRejected("%s.path must start with '/'" % where)
        method = str(data.get("method", "POST")).upper()
        if method not in cls.METHODS:
            raise ArtifactRejected("%s.method must be one of %s" % (where, ", ".join(cls.METHODS)))
        pairs = []
        for key in ("form", "files"):
            table = _object(data.get(key, {}), "%s.%s" % (where, key))
            if not all(isinstance(v, str) for v in table.values()):
                raise ArtifactRejected("%s.%s values must be strings" % (where, key))
            pairs.append(tuple(sorted(table.items())))
        files = tuple((k, _rel_path(v, "%s.files.%s" % (where, k))) for k, v in pairs[1])
        body = data.get("json")
        if body is not None and (pairs[0] or files):
            raise ArtifactRejected("%s takes either json or form/files, not both" % where)
        json_body = json.dumps(body, sort_keys=True, ensure_ascii=False) if body is not None else None
        expect = data.get("expect", "")
        if not isinstance(expect, str):
            raise ArtifactRejected("%s.expect must be a Content-Type prefix" % where)
        min_bytes = data.get("min-bytes", 1)
        if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
            raise ArtifactRejected("%s.min-bytes must be a whole number of bytes" % where)
        return cls(path, method, pairs[0], json_body, files, expect, min_bytes,
                   _positive(data, "timeout", 120.0, where))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"path": self.path, "method": self.method, "expect": self.expect,
                               "min-bytes": self.min_bytes, "timeout": self.timeout}
        if self.form:
            out["form"] = dict(self.form)
        if self.files:
            out["files"] = dict(self.files)
        if self.json_body is not None:
            out["json"] = json.loads(self.json_body)
        return out


@dataclass(frozen=True)
class GpuRequirement:
    """`[target.gpu]`: what the box's GPU must offer; each bound is optional."""

    KEY = "gpu"

    min_compute_capability: Optional[str] = None   # "8.0"
    min_driver: Optional[str] = None               # "525.60.13"
    min_memory_gb: Optional[float] = None

    @classmethod
    def from_json(cls, data: Any, where: str) -> "GpuRequirement":
        data = _object(data, where)
        cc = _optional_str(data, "min-compute-capability", where)
        driver = _optional_str(data, "min-driver", where)
        for key, value in (("min-compute-capability", cc), ("min-driver", driver)):
            if value is not None and not re.match(r"^\d+(\.\d+)*$", value):
                raise ArtifactRejected("%s.%s must be a version such as 8.0, not %r" % (where, key, value[:40]))
        memory = data.get("min-memory-gb")
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory <= 0):
            raise ArtifactRejected("%s.min-memory-gb must be a positive number" % where)
        return cls(cc, driver, float(memory) if memory is not None else None)

    @classmethod
    def from_target(cls, target: Mapping[str, Any], where: str = "target") -> Optional["GpuRequirement"]:
        raw = target.get(cls.KEY)
        return cls.from_json(raw, "%s.%s" % (where, cls.KEY)) if raw is not None else None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.min_compute_capability is not None:
            out["min-compute-capability"] = self.min_compute_capability
        if self.min_driver is not None:
            out["min-driver"] = self.min_driver
        if self.min_memory_gb is not None:
            out["min-memory-gb"] = self.min_memory_gb
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
    # The first start: steps run before the server, files the app builds itself, the synthesis probe.
    prepare: Tuple[PrepareStep, ...] = ()
    build_outputs: Tuple[str, ...] = ()
    probe: Optional[ProbeSpec] = None

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
        raw_steps = data.get("prepare", [])
        if not isinstance(raw_steps, list):
            raise ArtifactRejected("%s.prepare must be a list of steps" % where)
        steps = tuple(PrepareStep.from_dict(s, "%s.prepare[%d]" % (where, i)) for i, s in enumerate(raw_steps))
        if len({s.name for s in steps}) != len(steps):
            raise ArtifactRejected("%s.prepare names a step twice" % where)
        outputs = data.get("build-outputs", [])
        if not isinstance(outputs, list):
            raise ArtifactRejected("%s.build-outputs must be a list of paths" % where)
        built = tuple(_rel_path(o, "%s.build-outputs" % where) for o in outputs)
        probe = ProbeSpec.from_dict(data["probe"], "%s.probe" % where) if data.get("probe") is not None else None
        return cls(tuple(command), launcher, port, ready_log, health, timeouts[0], timeouts[1], steps, built, probe)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "command": list(self.command),
            "launcher": self.launcher,
            "port": self.port,
            "ready-log": self.ready_log,
            "health-path": self.health_path,
            "ready-timeout": self.ready_timeout,
            "silence-timeout": self.silence_timeout,
        }
        # Written only when set, so manifests without them keep their bytes and digests.
        if self.prepare:
            out["prepare"] = [step.to_dict() for step in self.prepare]
        if self.build_outputs:
            out["build-outputs"] = list(self.build_outputs)
        if self.probe is not None:
            out["probe"] = self.probe.to_dict()
        return out

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
        if fmt not in (FORMAT, DELTA_FORMAT):
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
            data = loads_bounded(raw)
        except JsonRefused as exc:
            raise ArtifactRejected("%s is refused: %s" % (where, exc)) from None
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
        delta = self.delta()
        if (delta is not None) != (self.format == DELTA_FORMAT):
            raise ArtifactRejected("%s: format %s does not match its %s record" % (where, self.format, DeltaBase.KEY))
        if delta is not None:
            for path in delta.on_box:
                if path.lower() not in seen:
                    raise ArtifactRejected("%s.%s lists %s, which is not a member" % (where, DeltaBase.KEY, path))
        # The metadata is read here too, so a bad record stops the install before anything is written.
        paths = [e.path for e in self.files]
        GpuRequirement.from_target(self.target, "%s.target" % where)
        if self.kind == "models":
            paths += [d.path for d in ModelsMeta.from_manifest(self).duplicates]
        else:
            PackagesMeta.from_manifest(self)
        check_no_clash(paths, where)

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

    def delta(self) -> Optional["DeltaBase"]:
        """The delta record of a delta artifact (None for a full one)."""
        raw = self.meta.get(DeltaBase.KEY)
        return None if raw is None else DeltaBase.from_json(raw, "%s %s" % (self.name, DeltaBase.KEY))

    def stored_files(self) -> Tuple[FileEntry, ...]:
        """The members the zip itself holds: all of them, less a delta's members expected on the box."""
        delta = self.delta()
        if delta is None:
            return self.files
        on_box = set(delta.on_box)
        return tuple(e for e in self.files if e.path not in on_box)

    def full(self) -> "ArtifactManifest":
        """The manifest the full artifact of the same build carries (a delta's without its delta record)."""
        if self.format == FORMAT:
            return self
        meta = {k: v for k, v in self.meta.items() if k != DeltaBase.KEY}
        return ArtifactManifest(self.kind, self.name, self.target, self.files, meta, FORMAT)

    def build_id(self) -> Optional[str]:
        """The build this artifact was packed in (None for artifacts packed before builds had ids)."""
        value = self.meta.get(BUILD_ID_KEY)
        return value if isinstance(value, str) and value else None

    def server(self) -> Optional[ServerSpec]:
        raw = self.meta.get("server")
        return ServerSpec.from_dict(raw, "%s server" % self.name) if isinstance(raw, dict) else None

    def packages_meta(self) -> "PackagesMeta":
        """The typed metadata of a packages manifest (empty parts for a hand-made record)."""
        return PackagesMeta.from_manifest(self)

    def models_meta(self) -> "ModelsMeta":
        """The typed metadata of a models manifest, duplicates checked against the members."""
        return ModelsMeta.from_manifest(self)


# -- the metadata payload: one typed record per part, each with a reader and a writer -------


def _object(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ArtifactRejected("%s must be an object" % where)
    return data


def _list(data: Any, where: str) -> List[Any]:
    if not isinstance(data, list):
        raise ArtifactRejected("%s must be a list" % where)
    return data


def _rest(data: Mapping[str, Any], known: Tuple[str, ...]) -> Dict[str, Any]:
    """The keys a record does not type, kept so that reading and writing again loses nothing."""
    return {k: v for k, v in data.items() if k not in known}


def _with_rest(rest: Dict[str, Any], typed: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(rest)
    out.update((k, v) for k, v in typed.items() if v is not None)
    return out


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> Optional[str]:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ArtifactRejected("%s.%s must be a string" % (where, key))
    return value


@dataclass(frozen=True)
class PackageRecord:
    """One locked package: name, version, the file installed; `extra` keeps the rest (sha256, built-from)."""

    name: str
    version: str
    filename: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str) -> "PackageRecord":
        data = _object(data, where)
        return cls(_get(data, "name", str, where), _get(data, "version", str, where),
                   _optional_str(data, "filename", where), _rest(data, ("name", "version", "filename")))

    def to_json(self) -> Dict[str, Any]:
        return _with_rest(self.extra, {"name": self.name, "version": self.version, "filename": self.filename})


@dataclass(frozen=True)
class UvRecord:
    """The uv carried as uv/uv: its version and the wheel it came from."""

    version: str
    filename: str

    @classmethod
    def from_json(cls, data: Any, where: str) -> "UvRecord":
        data = _object(data, where)
        return cls(_get(data, "version", str, where), _get(data, "filename", str, where))

    def to_json(self) -> Dict[str, Any]:
        return {"version": self.version, "filename": self.filename}


@dataclass(frozen=True)
class AppRecord:
    """Where the app under app/ came from: a git URL and commit, or a local path (the lock's app pin)."""

    git: Optional[str] = None
    commit: Optional[str] = None
    path: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str) -> "AppRecord":
        data = _object(data, where)
        return cls(_optional_str(data, "git", where), _optional_str(data, "commit", where),
                   _optional_str(data, "path", where), _rest(data, ("git", "commit", "path")))

    def to_json(self) -> Dict[str, Any]:
        return _with_rest(self.extra, {"git": self.git, "commit": self.commit, "path": self.path})


@dataclass(frozen=True)
class ModelSteps:
    """What the installer does with a model's files after laying them out (paths relative to the model).

    `unpacked` gives, per archive of `unzip`, the bytes it unpacks to (read by cosybuild from the
    archive's central directory), so preflight can count the disk the step needs.
    """

    unzip: Tuple[str, ...] = ()
    install_wheels: Tuple[str, ...] = ()
    unpacked: Dict[str, int] = field(default_factory=dict)

    KEYS = ("unzip", "install-wheels")
    UNPACKED_KEY = "unpacked-bytes"

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ModelSteps":
        data = _object({} if data is None else data, where)
        found: Dict[str, Tuple[str, ...]] = {}
        for key in cls.KEYS:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ArtifactRejected("%s.%s must be a list of file names" % (where, key))
            for item in value:
                check_member_name(item, "%s.%s" % (where, key))
            found[key] = tuple(value)
        unpacked = _object(data.get(cls.UNPACKED_KEY, {}), "%s.%s" % (where, cls.UNPACKED_KEY))
        for name, size in unpacked.items():
            if name not in found["unzip"] or isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ArtifactRejected("%s.%s must give a size in bytes for each unzip archive"
                                       % (where, cls.UNPACKED_KEY))
        return cls(found["unzip"], found["install-wheels"], dict(unpacked))

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.unzip:
            out["unzip"] = list(self.unzip)
        if self.install_wheels:
            out["install-wheels"] = list(self.install_wheels)
        if self.unpacked:
            out[self.UNPACKED_KEY] = dict(sorted(self.unpacked.items()))
        return out

    def __bool__(self) -> bool:
        return bool(self.unzip or self.install_wheels)


@dataclass(frozen=True)
class ModelRecord:
    """One model of a models artifact: its directory name, install steps, and its pin (`pin`: source, repo...)."""

    name: str
    steps: ModelSteps = ModelSteps()
    pin: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ModelRecord":
        data = _object(data, where)
        name = _get(data, "name", str, where)
        check_member_name(name, "%s.name" % where)
        return cls(name, ModelSteps.from_json(data.get("steps"), "%s.steps" % where), _rest(data, ("name", "steps")))

    def to_json(self) -> Dict[str, Any]:
        return _with_rest(self.pin, {"name": self.name, "steps": self.steps.to_json() if self.steps else None})


@dataclass(frozen=True)
class Duplicate:
    """A file stored once in the zip: `path` is recreated on the box from the member `same_as`."""

    path: str
    same_as: str
    size: int
    sha256: str
    executable: bool = False

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Duplicate":
        data = _object(data, where)
        entry = FileEntry.from_dict(data, where)
        check_member_name(entry.path, "%s.path" % where)
        return cls(entry.path, _get(data, "same-as", str, where), entry.size, entry.sha256, entry.executable)

    def to_json(self) -> Dict[str, Any]:
        return {"path": self.path, "same-as": self.same_as, "size": self.size, "sha256": self.sha256,
                "executable": self.executable}

    def entry(self) -> FileEntry:
        return FileEntry(self.path, self.size, self.sha256, self.executable)


@dataclass(frozen=True)
class BundledPython:
    """The relocatable CPython carried under python/ (`bundled-python` in the packages metadata)."""

    KEY = "bundled-python"

    member: str                            # "python/cpython-3.10.19+...-install_only.tar.gz"
    version: str                           # "3.10.19"
    glibc_floor: Optional[Tuple[int, int]]
    libpython: str                         # "lib/libpython3.10.so.1.0" under its top folder, "" if none
    key: str = ""                          # uv's download key, e.g. "cpython-3.10.19-linux-x86_64-gnu"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @classmethod
    def from_json(cls, data: Any, where: str) -> "BundledPython":
        data = _object(data, where)
        member = _get(data, "member", str, where)
        if not member.startswith(PYTHON_PREFIX):
            raise ArtifactRejected("%s.member must lie under %s" % (where, PYTHON_PREFIX))
        floor = _optional_str(data, "glibc_floor", where)
        parsed: Optional[Tuple[int, int]] = None
        if floor:
            parts = floor.split(".")
            if len(parts) < 2 or not all(p.isdigit() and len(p) <= 4 for p in parts[:2]):
                raise ArtifactRejected("%s.glibc_floor must be a version such as 2.17, not %r" % (where, floor[:40]))
            parsed = (int(parts[0]), int(parts[1]))
        return cls(member, _get(data, "version", str, where), parsed,
                   _optional_str(data, "libpython", where) or "", _optional_str(data, "key", where) or "")

    def to_json(self) -> Dict[str, Any]:
        floor = "%d.%d" % self.glibc_floor if self.glibc_floor else None
        return {"member": self.member, "version": self.version, "glibc_floor": floor,
                "libpython": self.libpython, "key": self.key}


@dataclass(frozen=True)
class DeltaBase:
    """What a delta artifact leaves out (`delta` in its manifest): members expected on the box, and its base.

    `on_box` are member paths whose content (by the sha256 its entry lists) the box already has
    from the base bundle; `base` maps each artifact file of the base bundle to its sha256 as the
    base's SHA256SUMS lists it.
    """

    KEY = "delta"

    base: Dict[str, str]
    on_box: Tuple[str, ...]

    @classmethod
    def from_json(cls, data: Any, where: str) -> "DeltaBase":
        data = _object(data, where)
        base = _object(_get(data, "base", dict, where), "%s.base" % where)
        for name, digest in base.items():
            if not isinstance(digest, str) or not _HEX64.match(digest):
                raise ArtifactRejected("%s.base.%s must be 64 lowercase hex digits" % (where, name))
        on_box = _get(data, "on-box", list, where)
        if not all(isinstance(p, str) for p in on_box):
            raise ArtifactRejected("%s.on-box must be a list of member paths" % where)
        return cls(dict(base), tuple(on_box))

    def to_json(self) -> Dict[str, Any]:
        return {"base": dict(sorted(self.base.items())), "on-box": sorted(self.on_box)}


@dataclass(frozen=True)
class PackagesMeta:
    """The metadata of offline_packages.zip: locked packages, the uv carried, the app, server, lock digests."""

    packages: Tuple[PackageRecord, ...] = ()
    uv: Optional[UvRecord] = None
    app: Optional[AppRecord] = None
    server: Optional[ServerSpec] = None
    lock_digests: Dict[str, str] = field(default_factory=dict)
    python: Optional[BundledPython] = None

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], where: str) -> "PackagesMeta":
        raw = _list(meta.get("packages", []), "%s.packages" % where)
        packages = tuple(PackageRecord.from_json(p, "%s.packages[%d]" % (where, i)) for i, p in enumerate(raw))
        uv = UvRecord.from_json(meta["uv"], "%s.uv" % where) if meta.get("uv") is not None else None
        app = AppRecord.from_json(meta["app"], "%s.app" % where) if meta.get("app") is not None else None
        server = ServerSpec.from_dict(_object(meta["server"], "%s.server" % where), "%s.server" % where) \
            if meta.get("server") is not None else None
        digests = _object(meta.get("lock-digests", {}), "%s.lock-digests" % where)
        for key, value in digests.items():
            if not isinstance(value, str):
                raise ArtifactRejected("%s.lock-digests.%s must be a string" % (where, key))
        python = BundledPython.from_json(meta[BundledPython.KEY], "%s.%s" % (where, BundledPython.KEY)) \
            if meta.get(BundledPython.KEY) is not None else None
        return cls(packages, uv, app, server, dict(digests), python)

    @classmethod
    def from_manifest(cls, manifest: "ArtifactManifest") -> "PackagesMeta":
        return cls.from_json(manifest.meta, "%s %s" % (manifest.name, MANIFEST_NAME))

    def to_json(self) -> Dict[str, Any]:
        """The manifest metadata cosybuild writes (only the parts present)."""
        out: Dict[str, Any] = {"packages": [p.to_json() for p in sorted(self.packages, key=lambda p: p.name)]}
        if self.uv is not None:
            out["uv"] = self.uv.to_json()
        if self.app is not None:
            out["app"] = self.app.to_json()
        if self.server is not None:
            out["server"] = self.server.to_dict()
        if self.lock_digests:
            out["lock-digests"] = dict(self.lock_digests)
        if self.python is not None:
            out[BundledPython.KEY] = self.python.to_json()
        return out


@dataclass(frozen=True)
class ModelsMeta:
    """The metadata of pretrained_models.zip: every model with its steps, and the duplicates."""

    models: Tuple[ModelRecord, ...] = ()
    duplicates: Tuple[Duplicate, ...] = ()

    @classmethod
    def from_json(cls, meta: Mapping[str, Any], where: str) -> "ModelsMeta":
        raw_models = _list(meta.get("models", []), "%s.models" % where)
        models = tuple(ModelRecord.from_json(m, "%s.models[%d]" % (where, i)) for i, m in enumerate(raw_models))
        raw_dups = _list(meta.get("duplicates", []), "%s.duplicates" % where)
        dups = tuple(Duplicate.from_json(d, "%s.duplicates[%d]" % (where, i)) for i, d in enumerate(raw_dups))
        return cls(models, dups)

    @classmethod
    def from_manifest(cls, manifest: "ArtifactManifest") -> "ModelsMeta":
        where = "%s %s" % (manifest.name, MANIFEST_NAME)
        meta = cls.from_json(manifest.meta, where)
        members = manifest.by_path()
        for i, dup in enumerate(meta.duplicates):
            original = members.get(dup.same_as)
            if original is None or original.sha256 != dup.sha256 or original.size != dup.size:
                raise ArtifactRejected("%s.duplicates[%d]: %s names %s, which the manifest does not list with that "
                                       "content" % (where, i, dup.path, dup.same_as))
            if dup.path in members:
                raise ArtifactRejected("%s.duplicates[%d]: %s is also a member" % (where, i, dup.path))
        return meta

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"models": [m.to_json() for m in self.models]}
        if self.duplicates:
            out["duplicates"] = [d.to_json() for d in self.duplicates]
        return out

    def known(self, manifest: "ArtifactManifest") -> Dict[str, FileEntry]:
        """Every file the manifest promises under pretrained_models: its members and its duplicates."""
        known = manifest.by_path()
        known.update((d.path, d.entry()) for d in self.duplicates)
        return known
