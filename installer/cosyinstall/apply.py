"""`check` and `apply`: uploads -> preflight table -> staged, journaled steps.

apply is two calls, with nothing called back: `prepare` opens the uploads, runs preflight,
plans the steps and, when nothing blocks, takes the apply lock (it writes nothing into <to>
but the state directory the lock lives in); `install` then runs the steps under that lock
(install_steps.py): every changed file of every step is first extracted and verified into
.cosyinstall/staging, so damage anywhere is found before anything in <to> changes; then the
steps are committed one by one, each journaled. The steps run in a new generation built
aside (generations.py), which becomes current by one atomic switch only once every step is
complete; a failure removes the half-built generation, so the current one is never touched
and a failed first install leaves nothing behind. An unchanged bundle does nothing.
Starting the server afterwards is the caller's (the CLI's) business.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from cosyinstall import generations as gens
from cosyinstall import installed as inst
from cosyinstall.artifact import ServerSpec
from cosyinstall.bundle_signature import signature_gate
from cosyinstall.buildstamp import BuildStamp
from cosyinstall.bundledpython import python_choice_for
from cosyinstall.delta_source import delta_findings
from cosyinstall.errors import ArtifactRejected, DiskFull, EnvironmentUnsuitable, is_disk_full
from cosyinstall.install_plan import STEPS
from cosyinstall.install_steps import Run, after_failure, install as install_steps, todo, uv_row
from cosyinstall.journal import ApplyLock, Journal
from cosyinstall.opened_bundle import Bundle, artifact_failure
from cosyinstall.preflight import Finding, cuda_major, evaluate, first_blocking, raise_first
from cosyinstall.probe import gather
from cosyinstall.python_choice import Choice
from cosyinstall.progress import Reporter
from cosyinstall.tree import InstallTree
from cosyinstall.trust import record_installed

__all__ = ["Options", "Prepared", "Outcome", "check", "prepare", "install", "STEPS"]

_NO_SPACE = "free some space and run apply again"


@dataclass
class Options:
    from_dir: str
    tree: InstallTree
    python: Optional[str] = None
    wait_lock: bool = False
    allow_downgrade: bool = False
    jobs: Optional[int] = None  # threads that extract and verify; None: from the CPU count


@dataclass
class Outcome:
    """What an install did: the steps it ran, and the server the installed bundle defines (if any)."""

    ran: List[str] = field(default_factory=list)
    server: Optional[ServerSpec] = None
    # The generation this apply made current, and the one current before it (None on a first install).
    generation: Optional[str] = None
    previous: Optional[str] = None


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
    facts = gather(opts.tree.root, minor, opts.python, want_python=need_python)
    cuda = cuda_major([p.to_json() for p in bundle.packages.packages()]) if bundle.packages is not None else None
    findings = evaluate(facts, target, _need_bytes(bundle, steps), need_python=need_python, cuda=cuda,
                        launcher=_launcher(bundle))
    choice = None
    if need_python:  # --python, the box's CPython or the bundled one
        choice = python_choice_for(bundle, facts, target, opts.python)
        findings = [choice.finding if f.check == "python" else f for f in findings]
    if need_python and bundle.packages is not None:
        findings.insert(1, uv_row(bundle.packages, opts.tree))
    return findings, choice


def _launcher(bundle: Bundle) -> Optional[str]:
    manifest = bundle.packages.manifest if bundle.packages is not None else None
    try:
        server = manifest.server() if manifest is not None else None
    except ArtifactRejected:
        return None
    return server.launcher if server is not None else None


def _preflight(bundle: Bundle, journal: Journal, opts: Options, everything: bool
               ) -> Tuple[List[Finding], List[Tuple[str, str]], Optional[Choice]]:
    findings = list(bundle.findings)
    todo_steps: List[Tuple[str, str]] = []
    if not any(f.code == ArtifactRejected.exit_code and not f.ok for f in findings):
        try:
            todo_steps = todo(bundle, journal)
            findings += delta_findings(bundle, opts.tree, todo_steps)
        except ArtifactRejected as exc:
            findings.append(artifact_failure("artifacts", exc))
    judged = todo_steps
    if everything and not todo_steps:
        # check on an installed tree still judges the box for every step the bundle holds.
        judged = [(s, "") for s in STEPS if (s == "models" and bundle.models) or (s != "models" and bundle.packages)]
    box, python = _box_findings(bundle, opts, judged)
    return findings + box, todo_steps, python


def _warn_handmade(bundle: Bundle, reporter: Reporter) -> None:
    for label in bundle.handmade:
        reporter.warn("!" * 72)
        reporter.warn("%s has no MANIFEST.json: it was not made by cosybuild, so NOTHING in it can be" % label)
        reporter.warn("verified beyond each member's CRC. Installing it the way the deploy script does.")
        reporter.warn("!" * 72)


def check(opts: Options, reporter: Reporter) -> List[Finding]:
    """Preflight only: verify the uploads and judge the box; writes nothing."""
    journal = Journal(opts.tree)
    bundle = Bundle(opts.from_dir, journal.load().get("uploads", {}), reporter)
    try:
        _warn_handmade(bundle, reporter)
        findings, _steps, _python = _preflight(bundle, journal, opts, everything=True)
        return _signed(bundle, opts)[0] + findings
    finally:
        bundle.close()


# -- apply ---------------------------------------------------------------------------------


class Prepared:
    """An apply ready to install: the opened uploads, the preflight table and, unless blocked, the lock.

    Close it (or use it as a context manager) to release the lock and the uploads.
    """

    def __init__(self, opts: Options, reporter: Reporter, bundle: Bundle, findings: List[Finding],
                 steps: List[Tuple[str, str]], python: Optional[Choice]) -> None:
        self.opts = opts
        self.tree = opts.tree
        self.reporter = reporter
        self.bundle = bundle
        self.findings = findings
        # (step, digest) planned before the lock; install plans again under it.
        self.steps = steps
        self.python = python
        self.lock = ApplyLock(opts.tree, wait=opts.wait_lock, on_wait=reporter.info)
        # Whether --to held an install (or anything) before: a failed first install removes all it made.
        self.existed = os.path.exists(self.tree.root)
        self.home_existed = os.path.exists(self.tree.home)
        self.fresh = not inst.anything_installed(self.tree) and (not self.existed or _only_state(self.tree)) \
            and not os.path.exists(self.tree.trusted_keys)  # a failed first install must not forget the trust
        self.build: Optional[BuildStamp] = None  # the signed build, recorded once installed

    @property
    def blocked(self) -> bool:
        return first_blocking(self.findings) is not None

    def close(self) -> None:
        self.lock.release()
        self.bundle.close()

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare(opts: Options, reporter: Reporter) -> Prepared:
    """Open the uploads, run preflight and plan; when nothing blocks, take the apply lock.

    A blocked preflight writes nothing and takes no lock: `install` then raises the first
    failure. The caller shows `findings` in between.
    """
    # Modes are the installer's: nothing it (or uv, its child) creates is group- or world-writable.
    os.umask(0o022)
    journal = Journal(opts.tree)
    # Whole-file hashes are left to the pass that extracts (each upload read once).
    bundle = Bundle(opts.from_dir, journal.load().get("uploads", {}), reporter, defer=True)
    try:
        _warn_handmade(bundle, reporter)
        findings, steps, python = _preflight(bundle, journal, opts, everything=False)
        signed, stamp = _signed(bundle, opts)
        prepared = Prepared(opts, reporter, bundle, signed + findings, steps, python)
        prepared.build = stamp
        if not prepared.blocked:
            _take_lock(prepared)
    except BaseException:
        bundle.close()
        raise
    return prepared


def _signed(bundle: Bundle, opts: Options) -> Tuple[List[Finding], Optional[BuildStamp]]:
    """The signature row (first, so a refused signature is the failure shown) and the accepted build."""
    gate = signature_gate(opts.from_dir, opts.tree, bundle, opts.allow_downgrade)
    return ([gate.finding] if gate.finding is not None else []), gate.stamp


def _take_lock(prepared: Prepared) -> None:
    state = prepared.tree.state
    try:
        prepared.lock.acquire()
    except PermissionError:
        raise EnvironmentUnsuitable("no permission to create %s" % state, "run as root or choose another --to") from None
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(state) from None
        raise


def install(prepared: Prepared) -> Outcome:
    """Install the prepared bundle under its lock; refuses (raises) when preflight found a blocker."""
    raise_first(prepared.findings)
    assert prepared.lock.held, "prepare() takes the lock whenever preflight passes"
    tree, reporter = prepared.tree, prepared.reporter
    outcome = Outcome()
    choice = prepared.python
    run = Run(tree, prepared.bundle, reporter, choice.python if choice else None, prepared.lock,
              bundled_python=choice.bundled if choice else None)
    if prepared.opts.jobs:
        run.jobs = run.passes.jobs = max(1, prepared.opts.jobs)
    built: Optional[str] = None
    with open(tree.install_log, "a", encoding="utf-8") as log:
        reporter.log = log
        try:
            gens.recover(tree)
            if not todo(prepared.bundle, Journal(tree)):
                install_steps(run, outcome.ran)  # records the verified uploads, says nothing to do
            else:
                built, run.tree, _cloned = gens.build_aside(tree)
                run.state = Journal(run.tree)
                reporter.info("generation %s: building aside in %s" % (built, run.tree.root))
                install_steps(run, outcome.ran)
                gens.complete(tree, built)
                outcome.previous = gens.switch(tree, built)
                outcome.generation, built = built, None
                reporter.info("generation %s: now current" % outcome.generation)
        except BaseException as exc:
            reporter.log = None
            if built is not None:
                left = _discard_build(prepared, built)
            else:
                left = after_failure(run, prepared.fresh, prepared.existed)
            if isinstance(exc, DiskFull):
                exc.hint = _disk_hint(left)
                raise
            if is_disk_full(exc):
                raise DiskFull(str(getattr(exc, "filename", None) or tree.root), _disk_hint(left)) from None
            if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise EnvironmentUnsuitable(
                    "no permission to write %s (%s)" % (exc.filename or tree.root, exc.strerror),
                    "run as root or choose another --to") from None
            raise
        finally:
            reporter.log = None
    if prepared.build is not None:
        record_installed(tree, prepared.build)
    manifest = inst.installed_manifest(tree, "packages")
    outcome.server = manifest.server() if manifest is not None else None
    return outcome


def _only_state(tree: InstallTree) -> bool:
    try:
        return set(os.listdir(tree.root)) <= {os.path.basename(tree.state)}
    except OSError:
        return False


def _discard_build(prepared: Prepared, built: str) -> bool:
    """A failed build: its generation goes, the current one stays; True when an install remains."""
    tree = prepared.tree
    for path in tree.scratch:
        _quiet_rmtree(path)
    try:
        gens.discard(tree, built)
    except OSError:
        pass
    if gens.current(tree) is not None or os.path.isdir(tree.visible):
        return True
    if not gens.has_generations(tree):
        if prepared.home_existed:
            _quiet_rmtree(tree.gens)
        else:
            _quiet_rmtree(tree.home)  # a failed first install leaves no trace
    return False


def _quiet_rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _disk_hint(left: bool) -> str:
    if left:
        return _NO_SPACE + "; the installed generation was not changed"
    return _NO_SPACE + "; nothing was left behind"
