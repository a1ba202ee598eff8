"""Orchestration of `check` and `apply`: uploads -> preflight table -> staged, journaled steps -> server.

apply runs in two phases (steps.py): every changed file of every step is first extracted and
verified into .cosyinstall/staging, so damage anywhere is found before anything in <to>
changes; then the steps are committed one by one, each journaled. An interrupted apply is
finished by the next one; an unchanged bundle does nothing; a failed first install leaves
nothing behind.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from cosyinstall import installed as inst
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.extract import disk_full, is_disk_full
from cosyinstall.journal import ApplyLock, StateDir
from cosyinstall.plan import STEPS
from cosyinstall.bundledpython import python_choice_for
from cosyinstall.preflight import Finding, cuda_major, evaluate, raise_first
from cosyinstall.probe import gather
from cosyinstall.python_choice import Choice
from cosyinstall.progress import Reporter
from cosyinstall.sources import Bundle, artifact_failure
from cosyinstall.steps import Run, after_failure, install, todo, uv_row

__all__ = ["Options", "Outcome", "check", "apply", "STEPS"]


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


# -- preflight -----------------------------------------------------------------------------


def _need_bytes(bundle: Bundle, steps: List[Tuple[str, str]]) -> int:
    total = 0
    for step, _digest in steps:
        if step in ("app", "venv") and bundle.packages is not None:
            total += bundle.packages.need_bytes(step)
        elif step == "models" and bundle.models is not None:
            total += bundle.models.need_bytes()
    return total


def _box_findings(bundle: Bundle, opts: Options, steps: List[Tuple[str, str]]) -> Tuple[List[Finding], Optional[Choice]]:
    target = bundle.target()
    minor = str(target.get("python") or "") or None
    need_python = any(step == "venv" for step, _ in steps)
    facts = gather(opts.to, minor, opts.python, want_python=need_python)
    cuda = cuda_major(bundle.packages.packages()) if bundle.packages is not None else None
    findings = evaluate(facts, target, _need_bytes(bundle, steps), need_python=need_python, cuda=cuda)
    choice = None
    if need_python:  # issue 10: --python, the box's CPython or the bundled one
        choice = python_choice_for(bundle, facts, target, opts.python)
        findings = [choice.finding if f.check == "python" else f for f in findings]
    if need_python and bundle.packages is not None:
        findings.insert(1, uv_row(bundle.packages, StateDir(opts.to)))
    return findings, choice


def _preflight(bundle: Bundle, state: StateDir, opts: Options, everything: bool) -> Tuple[List[Finding], List[Tuple[str, str]], Optional[Choice]]:
    findings = list(bundle.findings)
    todo_steps: List[Tuple[str, str]] = []
    if not any(f.code == ArtifactRejected.exit_code and not f.ok for f in findings):
        try:
            todo_steps = todo(bundle, state)
        except ArtifactRejected as exc:
            findings.append(artifact_failure("artifacts", exc))
    judged = todo_steps
    if everything and not todo_steps:
        # check on an installed tree still judges the box for every step the bundle holds.
        judged = [(s, "") for s in STEPS if (s == "models" and bundle.models) or (s != "models" and bundle.packages)]
    box, python = _box_findings(bundle, opts, judged)
    return findings + box, todo_steps, python


def check(opts: Options, reporter: Reporter) -> List[Finding]:
    """Preflight only: verify the uploads and judge the box; writes nothing."""
    state = StateDir(opts.to)
    bundle = Bundle(opts.from_dir, state.load().get("uploads", {}), reporter)
    try:
        _warn_handmade(bundle, reporter)
        findings, _todo_steps, _python = _preflight(bundle, state, opts, everything=True)
        return findings
    finally:
        bundle.close()


def _warn_handmade(bundle: Bundle, reporter: Reporter) -> None:
    for label in bundle.handmade:
        reporter.warn("!" * 72)
        reporter.warn("%s has no MANIFEST.json: it was not made by cosybuild, so NOTHING in it can be" % label)
        reporter.warn("verified beyond each member's CRC. Installing it the way the deploy script does.")
        reporter.warn("!" * 72)


# -- apply ---------------------------------------------------------------------------------


def apply(
    opts: Options,
    reporter: Reporter,
    start: Optional[Callable[[Dict[str, Any], bool], Optional[str]]] = None,
    show: Optional[Callable[[List[Finding]], None]] = None,
) -> Outcome:
    """Install the bundle in opts.from_dir into opts.to.

    `show(findings)` is called with the preflight table before anything is written;
    `start(manifest_meta, changed)` starts the server afterwards.
    """
    opts.to = os.path.abspath(opts.to)
    state = StateDir(opts.to)
    bundle = Bundle(opts.from_dir, state.load().get("uploads", {}), reporter)
    outcome = Outcome()
    try:
        _warn_handmade(bundle, reporter)
        outcome.findings, _todo_steps, python = _preflight(bundle, state, opts, everything=False)
        if show is not None:
            show(outcome.findings)
        raise_first(outcome.findings)
        existed = os.path.exists(opts.to)
        fresh = not inst.anything_installed(state) and (not existed or _only_state(opts.to))
        try:
            state.ensure()
        except PermissionError:
            raise EnvironmentUnsuitable("no permission to create %s" % state.root, "run as root or choose another --to")
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(state.root)
            raise
        with ApplyLock(state, wait=opts.wait_lock, on_wait=reporter.info) as lock:
            run = Run(opts.to, state, bundle, reporter, python.python if python else None, lock)
            run.bundled_python = python.bundled if python else None  # issue 10
            with open(state.path("install.log"), "a", encoding="utf-8") as log:
                reporter.log = log
                try:
                    install(run, outcome.ran)
                except BaseException as exc:
                    reporter.log = None
                    left = after_failure(run, fresh, existed)
                    if is_disk_full(exc):
                        raise _disk_full_error(exc, opts.to, left) from None
                    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                        raise EnvironmentUnsuitable(
                            "no permission to write %s (%s)" % (exc.filename or opts.to, exc.strerror),
                            "run as root or choose another --to") from None
                    if getattr(exc, "disk_full", False):
                        exc.hint = _disk_hint(left)  # type: ignore[attr-defined]
                    raise
                finally:
                    reporter.log = None
            if not opts.no_start and start is not None:
                manifest = inst.installed_manifest(state, "packages")
                if manifest is not None and manifest.server() is not None:
                    outcome.url = start(manifest.meta, bool(outcome.ran))
                else:
                    reporter.warn("the installed bundle defines no server, so none was started")
    finally:
        bundle.close()
    return outcome


def _only_state(to: str) -> bool:
    try:
        return set(os.listdir(to)) <= {".cosyinstall"}
    except OSError:
        return False


def _disk_hint(left: bool) -> str:
    if left:
        return "free some space and run apply again; it resumes where this one stopped"
    return "free some space and run apply again; nothing was left behind"


def _disk_full_error(exc: BaseException, to: str, left: bool) -> EnvironmentUnsuitable:
    where = getattr(exc, "filename", None) or to
    return disk_full(str(where), _disk_hint(left))
