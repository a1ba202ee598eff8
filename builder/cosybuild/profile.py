"""The build manifest (manifests/NAME.toml): load it into frozen dataclasses and validate it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cosyinstall.artifact import GpuRequirement, ServerSpec
from cosyinstall.errors import CosyError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["Target", "Packages", "App", "Model", "Profile", "load_profile", "resolve_manifest_path", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_SOURCES = ("huggingface", "modelscope", "local")


class ManifestError(UsageError):
    """A build manifest is malformed; exit 2 with the file and key named."""


@dataclass(frozen=True)
class Target:
    python: str
    platform: str
    # Ship a relocatable CPython of `python` in offline_packages.zip; require the
    # chosen interpreter to provide libpython3.X.so.1.0 (TensorRT-LLM's bindings load it).
    bundle_python: bool = False
    shared_libpython: bool = False
    # [target.gpu]: judged by the installer's preflight; not a lock input.
    gpu: GpuRequirement | None = None


@dataclass(frozen=True)
class Packages:
    requirements: tuple[str, ...]
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    only_binary: tuple[str, ...] = ()
    exclude_newer: str | None = None


@dataclass(frozen=True)
class App:
    git: str | None = None
    rev: str | None = None
    submodules: bool = True
    path: str | None = None


@dataclass(frozen=True)
class Model:
    name: str
    source: str
    repo: str
    revision: str = "main"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    target: Target
    packages: Packages
    app: App
    models: tuple[Model, ...]
    server: ServerSpec
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def section_inputs(self) -> dict[str, Any]:
        """What each lock section depends on; a section is stale when its inputs change."""
        inputs: dict[str, Any] = {
            # Newer keys enter the digest only when set, so locks made before them stay current.
            # The bundled CPython is its own section: pinning it needs its download host, and
            # neither it nor shared-libpython changes which packages resolve.
            "packages": {"target": {"python": self.target.python, "platform": self.target.platform}, "packages": {
                k: v for k, v in asdict(self.packages).items() if v or k not in ("only_binary", "exclude_newer")}},
            "app": {"git": self.app.git, "rev": self.app.rev, "submodules": self.app.submodules, "path": self.app.path},
            "models": [
                {"name": m.name, "source": m.source, "repo": m.repo, "revision": m.revision,
                 "include": list(m.include), "exclude": list(m.exclude), "extra": dict(m.extra)}
                for m in self.models
            ],
        }
        if self.target.bundle_python:
            inputs["python"] = {"python": self.target.python, "platform": self.target.platform}
        return inputs

    def section_digests(self) -> dict[str, str]:
        return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()
                for k, v in self.section_inputs().items()}

    def lock_path(self) -> Path:
        manifests = (REPO_ROOT / "manifests").resolve()
        if self.path.resolve().parent == manifests:
            return REPO_ROOT / "lockfiles" / (self.name + ".lock.json")
        return self.path.with_suffix(".lock.json")


def resolve_manifest_path(spec: str | None) -> Path:
    """A name in manifests/ or a path to a .toml file; default: the real CosyVoice manifest."""
    spec = spec or "cosyvoice2-trtllm"
    candidate = Path(spec)
    if spec.endswith(".toml") or os.sep in spec or "/" in spec:
        if not candidate.is_file():
            raise UsageError("manifest %s does not exist" % spec)
        return candidate.resolve()
    named = REPO_ROOT / "manifests" / (spec + ".toml")
    if not named.is_file():
        known = sorted(p.stem for p in (REPO_ROOT / "manifests").glob("*.toml"))
        raise UsageError("there is no manifest named %s" % spec, "choose one of: %s" % ", ".join(known))
    return named


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError("%s must be a list of strings" % where)
    return tuple(value)


def _req(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ManifestError("%s has no %s" % (where, key))
    return table[key]


def _requirements(table: Mapping[str, Any], base: Path, where: str) -> tuple[str, ...]:
    lines = list(_strs(table.get("requirements"), where + " [packages].requirements"))
    req_file = table.get("requirements-file")
    if req_file:
        path = base / req_file
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError("%s names requirements-file %s, which cannot be read (%s)" % (where, path, exc.strerror)) from exc
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                lines.append(line)
    if not lines:
        raise ManifestError("%s [packages] lists no requirements" % where)
    return tuple(lines)


def _flag(table: Mapping[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ManifestError("%s [target].%s must be true or false, not %r" % (where, key, value))
    return value


def _exclude_newer(value: Any) -> str | None:
    """TOML may give a datetime or a string; uv takes an RFC 3339 timestamp or a date."""
    if value is None or value == "":
        return None
    text = value.isoformat() if hasattr(value, "isoformat") else value
    if not isinstance(text, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        raise ManifestError("[packages].exclude-newer must be a date such as 2026-01-31, not %r" % (value,))
    return text


def _gpu(target: Mapping[str, Any], where: str) -> GpuRequirement | None:
    try:
        return GpuRequirement.from_target(target, where + " [target]")
    except CosyError as exc:
        raise ManifestError(exc.message) from None


def load_profile(spec: str | None) -> Profile:
    path = resolve_manifest_path(spec)
    where = str(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError("%s is not valid TOML (%s)" % (where, exc)) from exc
    target_t = _req(raw, "target", where)
    target = Target(str(_req(target_t, "python", where + " [target]")), str(_req(target_t, "platform", where + " [target]")),
                    _flag(target_t, "bundle-python", where), _flag(target_t, "shared-libpython", where),
                    _gpu(target_t, where))
    pk = _req(raw, "packages", where)
    packages = Packages(
        _requirements(pk, path.parent, where),
        pk.get("index-url") or None,
        _strs(pk.get("extra-index-urls"), where + " [packages].extra-index-urls"),
        _strs(pk.get("find-links"), where + " [packages].find-links"),
        _strs(pk.get("only-binary"), where + " [packages].only-binary"),
        _exclude_newer(pk.get("exclude-newer")),
    )
    app_t = _req(raw, "app", where)
    if bool(app_t.get("git")) == bool(app_t.get("path")):
        raise ManifestError("%s [app] needs exactly one of git or path" % where)
    app = App(app_t.get("git"), app_t.get("rev", "HEAD" if app_t.get("git") else None),
              bool(app_t.get("submodules", True)), app_t.get("path"))
    models = []
    names = set()
    for i, m in enumerate(raw.get("models", [])):
        mw = "%s [[models]] #%d" % (where, i + 1)
        name = str(_req(m, "name", mw))
        source = str(_req(m, "source", mw))
        if source not in MODEL_SOURCES:
            raise ManifestError("%s source must be one of %s, not %r" % (mw, ", ".join(MODEL_SOURCES), source))
        if name in names or "/" in name or name.startswith("."):
            raise ManifestError("%s name %r is duplicated or not a plain directory name" % (mw, name))
        names.add(name)
        known = {"name", "source", "repo", "revision", "include", "exclude"}
        models.append(Model(name, source, str(_req(m, "repo", mw)), str(m.get("revision", "main")),
                            _strs(m.get("include"), mw + ".include"), _strs(m.get("exclude"), mw + ".exclude"),
                            {k: v for k, v in m.items() if k not in known}))
    try:
        server = ServerSpec.from_dict(_req(raw, "server", where), where + " [server]")
    except CosyError as exc:
        raise ManifestError(exc.message) from exc
    name = str(raw.get("name") or path.stem)
    return Profile(name, path, target, packages, app, tuple(models), server, raw)


def relative(profile: Profile, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (profile.base_dir / path).resolve()
