"""`cosyinstall verify`: the installed tree against its manifests, every difference reported.

It also decides the repair: the steps with damage are marked in the journal, so that the
next apply re-hashes their files and rewrites just the bad ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from cosyinstall import installed as inst
from cosyinstall.artifact import APP_PREFIX, FileEntry
from cosyinstall.errors import ArtifactRejected, CosyError
from cosyinstall.install_plan import STEPS, canonical_name
from cosyinstall.journal import ApplyLock, Journal
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.safepath import hash_below, link_below
from cosyinstall.tree import InstallTree
from cosyinstall.venv import installed_dists

__all__ = ["verify_steps", "mark_for_repair", "verify_and_mark", "Verdict", "canonical_name", "check_packages"]


def _check_files(root: str, entries: List[FileEntry], strip: str, problems: List[str], reporter: Reporter) -> None:
    total = sum(e.size for e in entries)
    with reporter.task("verifying %s" % root, total) as task:
        for entry in entries:
            rel = entry.path[len(strip):]
            path = os.path.join(root, *rel.split("/"))
            # Never hashed through a link: a link where the bundle has a file or folder is reported.
            link = link_below(root, rel)
            if link is not None:
                problems.append("%s is a symbolic link where the bundle has a %s"
                                % (os.path.join(root, *link.split("/")), "file" if link == rel else "folder"))
                continue
            found = hash_below(root, rel)
            if found is None:
                problems.append("%s is missing" % path)
                continue
            size, digest = found
            task.advance(size)
            if size != entry.size:
                problems.append("%s has %d bytes, %d expected" % (path, size, entry.size))
            elif digest != entry.sha256:
                problems.append("%s differs from its manifest (sha256)" % path)


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


def verify_steps(tree: InstallTree, reporter: Optional[Reporter] = None) -> Dict[str, List[str]]:
    """Every difference between <to> and what the last apply recorded, by the step that owns it."""
    reporter = reporter or NullReporter()
    journal = Journal(tree)
    if not inst.anything_installed(tree):
        return {"": ["nothing is installed in %s (no complete apply recorded)" % tree.root]}
    problems: Dict[str, List[str]] = {step: [] for step in STEPS}
    steps = journal.steps()
    packages = inst.installed_manifest(tree, "packages")
    models = inst.installed_manifest(tree, "models")
    record = inst.venv_record(tree)
    for step in STEPS:
        if journal.pending(step) is not None and not steps.get(step):
            problems[step].append("the %s step of the last apply did not finish" % step)
    expected_steps = [("venv", record), ("app", packages and inst.app_entries(packages)), ("models", models)]
    for step, present in expected_steps:
        if present and not steps.get(step) and journal.pending(step) is None:
            problems[step].append("the %s step is not recorded as complete" % step)
    if packages is not None:
        _check_files(tree.app, inst.app_entries(packages), APP_PREFIX, problems["app"], reporter)
    if models is not None:
        # Duplicates are files too: the model steps materialised them from their stored copy.
        entries = list(models.models_meta().known(models).values())
        _check_files(tree.models, entries, "", problems["models"], reporter)
    if record is None:
        problems["venv"].append("%s was never completed by an apply" % tree.venv)
    else:
        if not os.path.exists(tree.venv_python):
            # A dangling bin/python too: the CPython the venv was built from has gone.
            problems["venv"].append("%s is missing or its base interpreter is gone" % tree.venv_python)
        raw = record.get("packages", [])
        expected = [p for p in raw if isinstance(p, dict)] if isinstance(raw, list) else []
        problems["venv"].extend(check_packages(expected, installed_dists(tree), tree.venv))
    return {step: found for step, found in problems.items() if found}


def mark_for_repair(tree: InstallTree, steps: List[str]) -> List[str]:
    """Make the next apply redo these steps: it then re-hashes their files and rewrites the bad ones.

    Best effort: without write access to the state (or while an apply runs) nothing is marked.
    """
    wanted = [s for s in STEPS if s in steps]
    if not wanted:
        return []
    journal = Journal(tree)
    try:
        with ApplyLock(tree, wait=False):
            for step in wanted:
                journal.begin(step, [])
    except (CosyError, OSError):
        return []
    return wanted


@dataclass
class Verdict:
    """What verify found (`problems`, in step order) and which steps it marked for the next apply."""

    problems: List[str] = field(default_factory=list)
    marked: List[str] = field(default_factory=list)
    nothing_installed: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def error(self) -> ArtifactRejected:
        """The one sentence for a damaged tree: the first problem, and what the next apply will do."""
        more = " (and %d more listed above)" % (len(self.problems) - 1) if len(self.problems) > 1 else ""
        if self.nothing_installed:
            hint = "run cosyinstall apply first"
        elif self.marked:
            hint = "run cosyinstall apply to repair (it will redo: %s)" % ", ".join(self.marked)
        else:
            hint = "run cosyinstall apply to repair"
        return ArtifactRejected(self.problems[0] + more, hint)


def verify_and_mark(tree: InstallTree, reporter: Optional[Reporter] = None) -> Verdict:
    """verify_steps, then mark every damaged step for repair by the next apply."""
    found = verify_steps(tree, reporter)
    problems = [p for step in sorted(found) for p in found[step]]
    if not problems:
        return Verdict()
    return Verdict(problems, mark_for_repair(tree, list(found)), nothing_installed="" in found)
