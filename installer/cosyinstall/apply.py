"""Orchestration of `check` and `apply`: uploads -> preflight -> journaled steps -> server.

Each step is invalidated in the journal before it starts and recorded after it completes,
so an interrupted apply is finished by the next one, and an unchanged bundle does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from cosyinstall import installed as inst
from cosyinstall.artifact import ArtifactManifest, FileEntry
from cosyinstall.bundle import KIND_OF, MODELS_ZIP, PACKAGES_ZIP, find_uploads, verify_uploads
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.extract import extract_entries, publish, remove_stale, rmtree
from cosyinstall.journal import ApplyLock, StateDir
from cosyinstall.names import RESERVED_TOP
from cosyinstall.preflight import Finding, choose_python, evaluate, raise_first
from cosyinstall.probe import gather
from cosyinstall.progress import Reporter
from cosyinstall.venv import create_venv, install_requirements
from cosyinstall.zipread import ArtifactReader

__all__ = ["Options", "Outcome", "check", "apply", "STEPS"]

STEPS = ("app", "venv", "models")
UV_MEMBER = "uv/uv"
REQUIREMENTS_MEMBER = "requirements.txt"
WHEELS_PREFIX = "wheels/"


@dataclass
class Options:
    from_dir: str
    to: str
    python: Optional[str] = None
    no_start: bool = False
    launcher: Optional[str] = None
    port: Optional[int] = None
    wait_lock: bool = False


@dataclass
class Outcome:
    ran: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)
    url: Optional[str] = None
    already_running: bool = False


class _Bundle:
    """The opened, manifest-checked artifacts of one upload folder."""

    def __init__(self, opts: Options, state: StateDir, reporter: Reporter) -> None:
        self.uploads = find_uploads(opts.from_dir)
        self.readers: Dict[str, ArtifactReader] = {}
        try:
            for name, kind in KIND_OF.items():
                if name in self.uploads:
                    self.readers[kind] = ArtifactReader(self.uploads[name].path, kind)
            if "packages" in self.readers:
                _check_app_names(self.readers["packages"])
            self.verified = verify_uploads(self.uploads, state.load().get("uploads", {}), reporter)
        except BaseException:
            self.close()
            raise

    @property
    def target(self) -> Dict[str, Any]:
        first = self.readers.get("packages") or self.readers["models"]
        return first.manifest.target

    def digest(self, step: str) -> Optional[str]:
        reader = self.readers.get("models" if step == "models" else "packages")
        return reader.manifest.digest() if reader else None

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def _check_app_names(reader: ArtifactReader) -> None:
    for entry in inst.app_entries(reader.manifest):
        top = entry.path[len(inst.APP_PREFIX):].split("/")[0]
        if top in RESERVED_TOP:
            raise ArtifactRejected(
                "%s: app member %s would overwrite the installer's own %s" % (reader.path, entry.path, top)
            )


def _todo(bundle: _Bundle, state: StateDir) -> List[Tuple[str, str]]:
    todo = []
    for step in STEPS:
        digest = bundle.digest(step)
        if digest is None:
            if step != "models" and state.step_done(step) is None:
                raise ArtifactRejected(
                    "%s is not in the upload folder and nothing is installed yet" % PACKAGES_ZIP,
                    "upload it with SHA256SUMS",
                )
            continue
        if state.step_done(step) != digest:
            todo.append((step, digest))
    return todo


def _need_bytes(bundle: _Bundle, todo: List[Tuple[str, str]]) -> int:
    total = 0
    for step, _digest in todo:
        reader = bundle.readers["models" if step == "models" else "packages"]
        if step == "app":
            total += sum(e.size for e in inst.app_entries(reader.manifest))
        elif step == "venv":
            wheels = sum(e.size for e in reader.manifest.files if not e.path.startswith(inst.APP_PREFIX))
            # Wheels are staged, then unpacked into the venv at roughly twice their size.
            total += wheels * 3
        else:
            total += reader.manifest.total_size
    return total


def _preflight(bundle: _Bundle, opts: Options, todo: List[Tuple[str, str]]) -> List[Finding]:
    minor = str(bundle.target.get("python", ""))
    need_python = any(step == "venv" for step, _ in todo)
    facts = gather(opts.to, minor, opts.python) if need_python else gather(opts.to, minor, os.devnull)
    findings = evaluate(facts, bundle.target, _need_bytes(bundle, todo))
    if not need_python:
        findings = [f for f in findings if f.check != "python"]
        findings.insert(0, Finding("python", True, "venv already installed; no interpreter needed"))
    findings.insert(0, Finding("artifacts", True, ", ".join(
        "%s (%s)" % (name, r.manifest.digest()[:12]) for name, r in
        ((n, bundle.readers[k]) for n, k in KIND_OF.items() if k in bundle.readers))))
    bundle.python = choose_python(facts, minor) if need_python else None  # type: ignore[attr-defined]
    return findings


def check(opts: Options, reporter: Reporter) -> List[Finding]:
    """Preflight only: verify the uploads and judge the box; writes nothing."""
    state = StateDir(opts.to)
    bundle = _Bundle(opts, state, reporter)
    try:
        todo = _todo(bundle, state)
        if not todo:
            todo = [(s, bundle.digest(s) or "") for s in STEPS if bundle.digest(s)]
        return _preflight(bundle, opts, todo)
    finally:
        bundle.close()


def apply(opts: Options, reporter: Reporter, start: Optional[Callable[[Dict[str, Any], bool], Optional[str]]] = None) -> Outcome:
    """Install the bundle in opts.from_dir into opts.to; `start(manifest_meta, changed)` starts the server."""
    opts.to = os.path.abspath(opts.to)
    state = StateDir(opts.to)
    bundle = _Bundle(opts, state, reporter)
    outcome = Outcome()
    try:
        todo = _todo(bundle, state)
        outcome.findings = _preflight(bundle, opts, todo)
        raise_first(outcome.findings)
        try:
            state.ensure()
        except PermissionError:
            raise EnvironmentUnsuitable("no permission to create %s" % state.root, "run as root or choose another --to")
        with ApplyLock(state, wait=opts.wait_lock), open(state.path("install.log"), "a", encoding="utf-8") as log:
            reporter.log = log
            data = state.load()
            data["uploads"] = bundle.verified
            state.save(data)
            # Another apply may have finished while we waited for the lock.
            for step, digest in _todo(bundle, state):
                reporter.info("step %s: installing from %s" % (step, digest[:12]))
                _STEP_FUNCS[step](bundle, state, opts, reporter)
                state.mark(step, digest)
                outcome.ran.append(step)
            if not outcome.ran:
                reporter.info("Nothing to do: %s already holds exactly these artifacts." % opts.to)
            if not opts.no_start and start is not None:
                manifest = inst.installed_manifest(state, "packages")
                if manifest is not None:
                    outcome.url = start(manifest.meta, bool(outcome.ran))
            reporter.log = None
    finally:
        bundle.close()
    return outcome


def _step_app(bundle: _Bundle, state: StateDir, opts: Options, reporter: Reporter) -> None:
    reader = bundle.readers["packages"]
    old = inst.installed_manifest(state, "packages")
    new_entries = inst.app_entries(reader.manifest)
    rels = _extract_changed(reader, new_entries, inst.app_entries(old), inst.APP_PREFIX, opts.to,
                            state.path("staging", "app"), reporter)
    remove_stale(opts.to, inst.app_paths(old), inst.app_paths(reader.manifest))
    state.write_json("packages.MANIFEST.json", reader.manifest.to_bytes())
    reporter.info("app: %d files written, %d unchanged" % (rels, len(new_entries) - rels))


def _step_models(bundle: _Bundle, state: StateDir, opts: Options, reporter: Reporter) -> None:
    reader = bundle.readers["models"]
    old = inst.installed_manifest(state, "models")
    dest = os.path.join(opts.to, inst.MODELS_DIR)
    entries = list(reader.manifest.files)
    written = _extract_changed(reader, entries, list(old.files) if old else [], "", dest,
                               state.path("staging", "models"), reporter)
    remove_stale(dest, inst.model_paths(old), inst.model_paths(reader.manifest))
    state.write_json("models.MANIFEST.json", reader.manifest.to_bytes())
    reporter.info("models: %d files written, %d unchanged" % (written, len(entries) - written))


def _extract_changed(reader: ArtifactReader, entries: List[FileEntry], old: List[FileEntry], strip: str,
                     dest: str, staging: str, reporter: Reporter) -> int:
    """Extract only entries whose content differs from the installed version; returns the count."""
    previous = {e.path: e for e in old}
    changed = []
    for entry in entries:
        before = previous.get(entry.path)
        target = os.path.join(dest, entry.path[len(strip):])
        if (before is not None and before.sha256 == entry.sha256 and before.executable == entry.executable
                and os.path.isfile(target) and os.path.getsize(target) == entry.size):
            continue
        changed.append(entry)
    rmtree(staging)
    rels = extract_entries(reader, changed, staging, strip, reporter)
    publish(staging, dest, rels)
    rmtree(staging)
    return len(rels)


def _step_venv(bundle: _Bundle, state: StateDir, opts: Options, reporter: Reporter) -> None:
    reader = bundle.readers["packages"]
    python = getattr(bundle, "python", None)
    if python is None:
        raise EnvironmentUnsuitable("no CPython %s found" % bundle.target.get("python"), "pass one with --python")
    work = state.path("work")
    cache = state.path("uv-cache")
    venv = inst.venv_dir(opts.to)
    rmtree(work)
    entries = [e for e in reader.manifest.files if not e.path.startswith(inst.APP_PREFIX)]
    if UV_MEMBER not in {e.path for e in entries} or REQUIREMENTS_MEMBER not in {e.path for e in entries}:
        raise ArtifactRejected("%s carries no %s or %s" % (reader.path, UV_MEMBER, REQUIREMENTS_MEMBER))
    extract_entries(reader, entries, work, "", reporter)
    rmtree(venv)
    uv = os.path.join(work, UV_MEMBER)
    create_venv(uv, python.path, venv, cache, reporter)
    install_requirements(uv, venv, os.path.join(work, WHEELS_PREFIX.rstrip("/")),
                         os.path.join(work, REQUIREMENTS_MEMBER), cache, reporter)
    rmtree(work)
    rmtree(cache)


_STEP_FUNCS = {"app": _step_app, "venv": _step_venv, "models": _step_models}
