"""`cosyinstall verify`: the installed tree against its manifests, reporting every difference."""

from __future__ import annotations

import glob
import os
import re
from typing import List, Optional

from cosyinstall import installed as inst
from cosyinstall.artifact import FileEntry
from cosyinstall.journal import StateDir
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.streams import hash_file

__all__ = ["verify_tree", "canonical_name"]


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_files(root: str, entries: List[FileEntry], strip: str, problems: List[str], reporter: Reporter) -> None:
    total = sum(e.size for e in entries)
    with reporter.task("verifying %s" % root, total) as task:
        for entry in entries:
            path = os.path.join(root, entry.path[len(strip):])
            if not os.path.isfile(path):
                problems.append("%s is missing" % path)
                continue
            size, digest = hash_file(path, task.advance)
            if size != entry.size:
                problems.append("%s has %d bytes, %d expected" % (path, size, entry.size))
            elif digest != entry.sha256:
                problems.append("%s differs from its manifest (sha256)" % path)


def _installed_dists(venv: str) -> dict:
    found = {}
    for info in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.dist-info")):
        base = os.path.basename(info)[: -len(".dist-info")]
        name, _, version = base.rpartition("-")
        found[canonical_name(name)] = version
    return found


def verify_tree(to: str, reporter: Optional[Reporter] = None) -> List[str]:
    """Every difference between <to> and what the last apply recorded; empty means intact."""
    reporter = reporter or NullReporter()
    state = StateDir(to)
    packages = inst.installed_manifest(state, "packages")
    if packages is None:
        return ["nothing is installed in %s (no complete apply recorded)" % state.to]
    problems: List[str] = []
    models = inst.installed_manifest(state, "models")
    steps = state.load().get("steps", {})
    for step, manifest in (("app", packages), ("venv", packages), ("models", models)):
        if manifest is not None and steps.get(step) != manifest.digest():
            problems.append("the %s step of the last apply did not finish" % step)
    _check_files(state.to, inst.app_entries(packages), inst.APP_PREFIX, problems, reporter)
    if models is not None:
        _check_files(os.path.join(state.to, inst.MODELS_DIR), list(models.files), "", problems, reporter)
    venv = inst.venv_dir(state.to)
    if not os.path.isfile(os.path.join(venv, "bin", "python")):
        problems.append("%s has no bin/python" % venv)
    dists = _installed_dists(venv)
    for pkg in packages.meta.get("packages", []):
        name = canonical_name(str(pkg.get("name", "")))
        version = str(pkg.get("version", ""))
        if name not in dists:
            problems.append("package %s is not installed in %s" % (name, venv))
        elif dists[name] != version:
            problems.append("package %s is %s in %s, %s expected" % (name, dists[name], venv, version))
    return problems
