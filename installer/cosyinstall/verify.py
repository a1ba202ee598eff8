"""`cosyinstall verify`: the installed tree against its manifests, reporting every difference."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from cosyinstall import installed as inst
from cosyinstall.artifact import ArtifactManifest, FileEntry
from cosyinstall.errors import ArtifactRejected, CosyError
from cosyinstall.journal import ApplyLock, StateDir
from cosyinstall.names import check_member_name
from cosyinstall.plan import STEPS, canonical_name
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.streams import hash_file
from cosyinstall.venv import installed_dists, venv_python

__all__ = ["verify_tree", "verify_steps", "mark_for_repair", "canonical_name", "check_packages"]


def _check_files(root: str, entries: List[FileEntry], strip: str, problems: List[str], reporter: Reporter) -> None:
    total = sum(e.size for e in entries)
    with reporter.task("verifying %s" % root, total) as task:
        for entry in entries:
            path = os.path.join(root, entry.path[len(strip):])
            if os.path.islink(path) or not os.path.isfile(path):
                problems.append("%s is missing" % path)
                continue
            size, digest = hash_file(path, task.advance)
            if size != entry.size:
                problems.append("%s has %d bytes, %d expected" % (path, size, entry.size))
            elif digest != entry.sha256:
                problems.append("%s differs from its manifest (sha256)" % path)


def _duplicates(manifest: ArtifactManifest) -> List[FileEntry]:
    """Files the models manifest promises as copies of members (materialised by the model steps)."""
    raw = manifest.meta.get("duplicates", [])
    out: List[FileEntry] = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
        if isinstance(path, str) and isinstance(size, int) and isinstance(digest, str):
            try:
                check_member_name(path, "models duplicates")
            except ArtifactRejected:
                continue
            out.append(FileEntry(path, size, digest, bool(item.get("executable", False))))
    return out


def check_packages(expected: List[Dict[str, object]], found: Dict[str, str], venv: str) -> List[str]:
    """Every locked package missing from the venv or at another version (pure)."""
    problems = []
    for pkg in expected:
        name = canonical_name(str(pkg.get("name", "")))
        version = str(pkg.get("version", ""))
        if not name:
            continue
        if name not in found:
            problems.append("package %s %s is not installed in %s" % (name, version, venv))
        elif found[name] != version:
            problems.append("package %s is %s in %s, %s expected" % (name, found[name], venv, version))
    return problems


def verify_steps(to: str, reporter: Optional[Reporter] = None) -> Dict[str, List[str]]:
    """Every difference between <to> and what the last apply recorded, by the step that owns it."""
    reporter = reporter or NullReporter()
    state = StateDir(to)
    if not inst.anything_installed(state):
        return {"": ["nothing is installed in %s (no complete apply recorded)" % state.to]}
    problems: Dict[str, List[str]] = {step: [] for step in STEPS}
    steps = state.steps()
    packages = inst.installed_manifest(state, "packages")
    models = inst.installed_manifest(state, "models")
    record = inst.venv_record(state)
    for step in STEPS:
        if state.pending(step) is not None and not steps.get(step):
            problems[step].append("the %s step of the last apply did not finish" % step)
    expected_steps = [("venv", record), ("app", packages and inst.app_entries(packages)), ("models", models)]
    for step, present in expected_steps:
        if present and not steps.get(step) and state.pending(step) is None:
            problems[step].append("the %s step is not recorded as complete" % step)
    if packages is not None:
        _check_files(state.to, inst.app_entries(packages), inst.APP_PREFIX, problems["app"], reporter)
    if models is not None:
        entries = list(models.files) + _duplicates(models)
        _check_files(os.path.join(state.to, inst.MODELS_DIR), entries, "", problems["models"], reporter)
    venv = inst.venv_dir(state.to)
    if record is None:
        problems["venv"].append("%s was never completed by an apply" % venv)
    else:
        if not os.path.exists(venv_python(venv)):
            # A dangling bin/python too: the CPython the venv was built from has gone.
            problems["venv"].append("%s/bin/python is missing or its base interpreter is gone" % venv)
        raw = record.get("packages", [])
        expected = [p for p in raw if isinstance(p, dict)] if isinstance(raw, list) else []
        problems["venv"].extend(check_packages(expected, installed_dists(venv), venv))
    return {step: found for step, found in problems.items() if found}


def verify_tree(to: str, reporter: Optional[Reporter] = None) -> List[str]:
    """Every difference between <to> and what the last apply recorded; empty means intact."""
    found = verify_steps(to, reporter)
    return [problem for step in [""] + list(STEPS) for problem in found.get(step, [])]


def mark_for_repair(to: str, steps: List[str]) -> List[str]:
    """Make the next apply redo these steps: it then re-hashes their files and rewrites the bad ones.

    Best effort: without write access to the state (or while an apply runs) nothing is marked.
    """
    state = StateDir(to)
    wanted = [s for s in STEPS if s in steps]
    if not wanted:
        return []
    try:
        with ApplyLock(state, wait=False):
            for step in wanted:
                state.begin(step, [])
    except (CosyError, OSError):
        return []
    return wanted
