"""The install steps (app, venv, models): stage (extract and verify), then commit, journaled.

Staging extracts every changed file into .cosyinstall/staging/<step> through the verified
copy; nothing in <to> changes until every step has staged. Committing publishes the staged
files with os.replace, builds or updates the venv with uv, runs the models' own steps
(model_steps.py), and records the step in the journal only when it is complete. Which files
to write, keep or remove is decided by install_plan.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from cosyinstall import installed as inst
from cosyinstall.artifact import PACKAGES_ZIP, REQUIREMENTS_REL, SUMS_NAME, UV_REL, WHEELS_DIR, ArtifactManifest, FileEntry
from cosyinstall.bundledpython import bundled_archive, unpack_bundled
from cosyinstall.delta_source import keep_venv_files, staging_reader
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable, is_disk_full
from cosyinstall.extract import publish, remove_paths, rmtree, set_mode, stage_items
from cosyinstall.install_plan import STEPS, FilePlan, Item, app_items, dropped_packages, installed_map, model_items, plan_files
from cosyinstall.journal import ApplyLock, Journal
from cosyinstall.model_steps import apply_model_steps
from cosyinstall.opened_bundle import Bundle, PackagesSource
from cosyinstall.preflight import Finding
from cosyinstall.probe import PythonFound
from cosyinstall.progress import Reporter
from cosyinstall.python_choice import BundledPython
from cosyinstall.safepath import hash_below, lstat_below
from cosyinstall.step_outputs import missing_output
from cosyinstall.tree import InstallTree
from cosyinstall.venv import Uv, installed_dists, venv_version
from cosyinstall.onepass import default_jobs
from cosyinstall.upload_pass import UploadPasses
from cosyinstall.zipread import open_zip
from cosyinstall.venv_check import mismatched
from cosyinstall.generations import set_aside
from cosyinstall.uvprogress import InstallProgress
from cosyinstall.venv_feed import VenvFeed
from cosyinstall.venv_lanes import Lanes

__all__ = ["Run", "todo", "install", "after_failure", "uv_row"]


@dataclass
class Staged:
    plan: FilePlan
    written: List[FileEntry]
    staging: str


class Run:
    """Everything one apply under the lock needs."""

    def __init__(self, tree: InstallTree, bundle: Bundle, reporter: Reporter,
                 python: Optional[PythonFound], lock: ApplyLock,
                 bundled_python: Optional[BundledPython] = None) -> None:
        self.tree = tree
        self.state = Journal(tree)
        self.bundle = bundle
        self.reporter = reporter
        self.python = python
        # The bundled CPython, when preflight chose it: unpacked from its verified member by the venv step.
        self.bundled_python = bundled_python
        self.lock = lock
        self.jobs = default_jobs()
        # Staging asks for members; each upload is then read once (upload_pass.py).
        self.passes = UploadPasses(bundle, self.jobs, reporter)
        # A venv built from scratch is filled by uv while the upload is still read (venv_feed.py).
        self.feed: Optional[VenvFeed] = None

    def uv(self, exe: str) -> Uv:
        """A runner of `exe` that keeps the apply lock held while uv runs."""
        return Uv(exe, self.tree.uv_cache, self.reporter, keep_fds=[self.lock.fileno()])


def todo(bundle: Bundle, state: Journal) -> List[Tuple[str, str]]:
    """(step, digest) for every step whose installed state differs from the bundle's."""
    steps: List[Tuple[str, str]] = []
    if bundle.packages is None:
        if state.step_done("venv") is None:
            raise ArtifactRejected(
                "%s is not in the upload folder and nothing is installed in %s yet" % (PACKAGES_ZIP, state.tree.root),
                "upload it with %s" % SUMS_NAME,
            )
    else:
        if bundle.packages.has_app:
            steps.append(("app", bundle.packages.digest("app")))
        steps.append(("venv", bundle.packages.digest("venv")))
    if bundle.models is not None:
        steps.append(("models", bundle.models.digest("models")))
    # A step recorded as done whose output has gone (a deleted .venv) is redone too.
    return [(step, digest) for step, digest in steps
            if state.step_done(step) != digest or missing_output(state.tree, step) is not None]


def install(run: Run, ran: List[str]) -> None:
    """Stage every step that differs, then commit them in order; `ran` collects the steps done."""
    state, reporter = run.state, run.reporter
    # Modes are the installer's: what it creates (and uv, which inherits this) is never group- or world-writable.
    os.umask(0o022)
    _remember_verified(state, run.bundle.verified)
    for path in run.tree.scratch:
        rmtree(path)
    # Another apply may have finished while we waited for the lock.
    steps = todo(run.bundle, state)
    for step in STEPS:
        if step not in dict(steps):
            state.discard_pending(step)
    if not steps:
        reporter.info("Nothing to do: %s already holds exactly these artifacts." % run.tree.root)
        return
    staged: Dict[str, Staged] = {}
    for step, digest in steps:
        reporter.info("step %s: extracting and verifying (%s)" % (step, digest[:12]))
        staged[step] = _STAGE[step](run)
    if run.feed is not None:
        # Pending from here: whatever stops the apply, the venv being fed is removed (after_failure).
        state.begin("venv", [])
        version = (".".join(map(str, run.python.version)) if run.python is not None
                   else run.bundled_python.version if run.bundled_python is not None else "?")
        reporter.info("venv: building %s from CPython %s while the upload is read" % (run.tree.venv, version))
        run.feed.start()
    # One read per upload: whole-file sha256 and staging together. Each staged file that is
    # renamed into the tree was fsynced first (power-cut ordering); wheels only feed uv.
    try:
        verified = run.passes.run()
    except BaseException:
        if run.feed is not None:
            run.feed.abort()
        raise
    _remember_verified(state, verified)
    for step, digest in steps:
        reporter.info("step %s: installing" % step)
        _COMMIT[step](run, staged[step], digest)
        ran.append(step)
        reporter.info("step %s: done" % step)
    if "venv" in ran and "models" not in ran:
        _rerun_model_steps(run)
    for path in run.tree.scratch:
        rmtree(path)


def _remember_verified(state: Journal, verified: Dict[str, Any]) -> None:
    if not verified:
        return
    data = state.load()
    uploads = dict(data.get("uploads", {}))
    uploads.update(verified)
    data["uploads"] = uploads
    state.save(data)


def after_failure(run: Run, fresh: bool, existed: bool) -> bool:
    """Remove what a failed apply wrote; returns whether an earlier install is still in place."""
    state, tree = run.state, run.tree
    for path in tree.scratch:
        _quiet(rmtree, path)
    if state.pending("venv") is not None:
        # uv stopped half-way: a venv in an unknown state is worse than none.
        _quiet(rmtree, tree.venv)
    if fresh and not state.steps():
        # A first install that failed: leave --to as it was found.
        for step, root in (("app", tree.app), ("models", tree.models)):
            _quiet(remove_paths, root, state.pending(step) or [])
        for path in (tree.models, tree.venv):
            _quiet(rmtree, path)
        _quiet(rmtree, tree.state)
        if not existed:
            _quiet(rmtree, tree.root)
        return False
    return bool(state.steps())


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def _uv_sources(source: PackagesSource, tree: InstallTree) -> List[Tuple[str, str]]:
    """Where a uv for the venv step can come from, best first: (description, path or '')."""
    found = []
    if source.has(UV_REL):
        found.append(("bundled in %s" % source.label, ""))
    wheel = source.uv_wheel_rel()
    if wheel:
        found.append(("from %s in %s" % (os.path.basename(wheel), source.label), ""))
    kept = tree.bundled_uv
    if os.path.isfile(kept) and os.access(kept, os.X_OK):
        found.append(("kept by the last install at %s" % kept, kept))
    on_path = shutil.which("uv")
    if on_path:
        found.append(("on PATH at %s" % on_path, on_path))
    return found


def uv_row(source: PackagesSource, tree: InstallTree) -> Finding:
    found = _uv_sources(source, tree)
    if found:
        return Finding("uv", True, found[0][0])
    return Finding(
        "uv", False, "no uv to install the wheels of %s with: the zip carries none and none is installed" % source.label,
        hint="add uv's manylinux wheel (pip download uv --only-binary :all: --platform manylinux2014_x86_64) "
             "to the zip, or put uv on PATH",
    )


# -- staging ------------------------------------------------------------------------------


def _on_disk(root: str) -> Tuple[Callable[[str], Optional[int]], Callable[[str], Optional[str]]]:
    # Never through a link below root: a file reached through a linked folder counts as absent.
    def size(rel: str) -> Optional[int]:
        st = lstat_below(root, rel)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def digest(rel: str) -> Optional[str]:
        found = hash_below(root, rel)
        return found[1] if found is not None else None

    return size, digest


def _stage(run: Run, step: str, source: Any, items: List[Item], staging: str, durable: bool,
           on_done: Optional[Callable[[str, str], None]] = None) -> List[FileEntry]:
    """Stage `items`: what the zip holds in its one read pass, what a delta leaves out copied (verified) from the box."""
    with staging_reader(run.tree, run.bundle.from_dir, source, [step]) as reader:
        on_box = [i for i in items if not reader.stored(i.key)]
        written = run.passes.add(source.reader, [i for i in items if reader.stored(i.key)], staging, durable, on_done)
        copied = stage_items(reader, on_box, staging, run.reporter, durable)
        written.extend(copied)
    if on_done is not None:
        for entry in copied:
            on_done(entry.path, os.path.join(staging, *entry.path.split("/")))
    return written


def _stage_files(run: Run, step: str, source: Any, items: List[Item], installed: List[Item],
                 root: str) -> Staged:
    pending = run.state.pending(step)
    size, digest = _on_disk(root)
    old_paths = [i.rel for i in installed] + (pending or [])
    # Not recorded at all (a first install, or a damaged journal): the files on disk are unknown, so hashed.
    unknown = pending is not None or run.state.step_done(step) is None
    plan = plan_files(items, installed_map(installed), size, digest, unknown, old_paths)
    staging = run.tree.staging(step)
    rmtree(staging)
    written = _stage(run, step, source, plan.write, staging, durable=True)
    return Staged(plan, written, staging)


def _stage_app(run: Run) -> Staged:
    source = run.bundle.packages
    assert source is not None
    old = inst.installed_manifest(run.tree, "packages")
    return _stage_files(run, "app", source, source.app_items(), app_items(old), run.tree.app)


def _stage_models(run: Run) -> Staged:
    source = run.bundle.models
    assert source is not None
    old = inst.installed_manifest(run.tree, "models")
    return _stage_files(run, "models", source, source.items(), model_items(old), run.tree.models)


def _stage_venv(run: Run) -> Staged:
    source = run.bundle.packages
    assert source is not None
    staging = run.tree.staging("venv")
    rmtree(staging)
    items = source.venv_items()
    run.feed = _feed(run, source, staging)
    written = _stage(run, "venv", source, items, staging, durable=False,
                     on_done=run.feed.landed if run.feed is not None else None)
    return Staged(FilePlan(write=items), written, staging)


def _feed(run: Run, source: PackagesSource, staging: str) -> Optional[VenvFeed]:
    """A feed for a venv built from scratch out of a built bundle's wheels; None where uv must see them all at once."""
    python = run.python.minor if run.python is not None else (
        run.bundled_python.minor if run.bundled_python is not None else None)
    if source.handmade or python is None or not _rebuild(run, source, python) or not source.has(UV_REL):
        return None
    by_file = {p.filename: p for p in source.packages() if p.filename}
    wheels: Dict[str, str] = {}
    for rel in source.wheel_rels():
        pkg = by_file.get(os.path.basename(rel))
        if pkg is None:
            return None  # a wheel the lock does not name: only the whole requirements file says what it is for
        wheels[rel] = "%s==%s" % (pkg.name, pkg.version)
    needs = {UV_REL}
    if run.python is None and run.bundled_python is not None:
        needs.add(run.bundled_python.member)
    tree = run.tree
    uv = run.uv(os.path.join(staging, UV_REL))

    def prepare() -> PythonFound:
        python = _venv_python(run, staging)
        rmtree(tree.venv)
        uv.create_venv(python.path, tree)
        return python

    # A side venv per further lane, made from the same CPython as the venv (venv_lanes.py).
    lanes = Lanes(tree.venv, tree.work, lambda path: uv.create_venv_at(feed.prepared.path, path))

    def install(requirements: str, found: str, lane: int) -> None:
        uv.install_batch(lanes.python(lane) if lane else tree.venv_python, requirements, found)

    # Its own scratch folder beside the staging: the staged files are kept whole for the next delta.
    rmtree(run.tree.staging("venv-feed"))
    feed = VenvFeed(wheels, needs, os.path.join(run.tree.staging("venv-feed"), "ready"), prepare, install,
                    lambda left: InstallProgress(tree, left, run.reporter, lanes=lanes.roots), run.reporter,
                    sizes={i.rel: i.size for i in source.venv_items()},
                    lanes=feed_lanes(run.jobs), open_lane=lanes.open, merge=lanes.merge)
    return feed


def feed_lanes(jobs: int) -> int:
    """uv runs at once while the upload is read: two on a box with two cores or more (see venv_lanes.py)."""
    # Two, not one per core: each uv run already unpacks as many wheels at once as there are
    # cores; the second only takes the cores the first leaves idle on its largest wheel.
    return 2 if jobs >= 2 else 1


def _venv_python(run: Run, staging: str) -> PythonFound:
    """The CPython the venv is built from: the one preflight found, else the bundled one, unpacked."""
    python = run.python
    bundled = run.bundled_python
    if python is None and bundled is not None:
        python = unpack_bundled(bundled_archive(staging, bundled), run.tree.bundled_python, bundled)
    if python is None:
        raise EnvironmentUnsuitable("no CPython found to build the venv from", "pass one with --python")
    return python


def _rebuild(run: Run, source: PackagesSource, minor: str) -> bool:
    """Whether the venv step starts from an empty venv rather than updating the one there."""
    tree = run.tree
    record = inst.venv_record(tree)
    version = venv_version(tree)
    return (
        run.state.pending("venv") is not None or record is None or source.handmade or bool(record.get("handmade"))
        or version is None or ".".join(version.split(".")[:2]) != minor
        or not os.path.exists(tree.venv_python)
    )


def _uv_from_wheel(wheel: str, dest: str) -> None:
    """The uv binary inside uv's own wheel (<name>.data/scripts/uv)."""
    try:
        with open_zip(wheel) as archive:  # a hand-made upload's wheel: the same structural checks
            names = [n for n in archive.namelist() if n.endswith(".data/scripts/uv")]
            if not names:
                return
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with archive.open(archive.getinfo(names[0])) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
    except (zipfile.BadZipFile, OSError) as exc:
        if is_disk_full(exc):
            raise
        raise ArtifactRejected("%s is not a readable uv wheel (%s)" % (os.path.basename(wheel), exc)) from exc
    os.chmod(dest, 0o755)


# -- committing -----------------------------------------------------------------------------


def _publish_files(run: Run, step: str, staged: Staged, root: str) -> None:
    run.state.begin(step, [i.rel for i in staged.plan.write + staged.plan.keep])
    publish(staged.staging, root, [e.path for e in staged.written])
    for item in staged.plan.keep:
        set_mode(root, item.rel, item.executable)
    removed = remove_paths(root, staged.plan.remove)
    rmtree(staged.staging)
    run.reporter.info("%s: %d files written, %d unchanged, %d removed"
                      % (step, len(staged.written), len(staged.plan.keep), len(removed)))


def _commit_app(run: Run, staged: Staged, digest: str) -> None:
    source = run.bundle.packages
    assert source is not None and source.manifest is not None
    _publish_files(run, "app", staged, run.tree.app)
    inst.write_manifest(run.tree, "packages", source.manifest)
    run.state.finish("app", digest)


def _commit_models(run: Run, staged: Staged, digest: str) -> None:
    source = run.bundle.models
    assert source is not None
    _publish_files(run, "models", staged, run.tree.models)
    kept = [FileEntry(i.rel, i.size, i.sha256 or "", i.executable) for i in staged.plan.keep]
    manifest = source.record(staged.written + kept)
    inst.write_manifest(run.tree, "models", manifest)
    _run_model_steps(run, manifest)
    run.state.finish("models", digest)


def _find_uv(run: Run, staging: str) -> str:
    staged = os.path.join(staging, UV_REL)
    if os.path.isfile(staged):
        return staged
    source = run.bundle.packages
    assert source is not None
    for _description, path in _uv_sources(source, run.tree):
        if path:
            return path
    row = uv_row(source, run.tree)
    raise EnvironmentUnsuitable(row.detail, row.hint)


def _commit_venv(run: Run, staged: Staged, digest: str) -> None:
    source = run.bundle.packages
    assert source is not None
    state, reporter, tree = run.state, run.reporter, run.tree
    wheels = os.path.join(staged.staging, WHEELS_DIR)
    feed, run.feed = run.feed, None
    if feed is not None:
        uv_exe = os.path.join(staged.staging, UV_REL)
        uv = run.uv(uv_exe)
        feed.finish()
        rmtree(run.tree.staging("venv-feed"))
        python = feed.prepared
        assert python is not None  # returned by the feed's prepare(), which finish() proved ran
        reporter.info("venv: built %s from CPython %s, filled by %d uv runs (%d at a time) while the upload was read"
                      % (tree.venv, ".".join(map(str, python.version)), feed.batches, len(feed.lanes_used)))
        _check_against_lock(uv, tree, wheels, os.path.join(staged.staging, REQUIREMENTS_REL), source)
        packages = [{"name": p.name, "version": p.version} for p in source.packages()]
    else:
        python = _venv_python(run, staged.staging)
        record = inst.venv_record(tree)
        rebuild = _rebuild(run, source, python.minor)
        uv_wheel = source.uv_wheel_rel()
        if not source.has(UV_REL) and uv_wheel is not None:
            _uv_from_wheel(os.path.join(staged.staging, uv_wheel), os.path.join(staged.staging, UV_REL))
        uv_exe = _find_uv(run, staged.staging)
        uv = run.uv(uv_exe)
        state.begin("venv", [])
        if rebuild:
            reporter.info("venv: building %s from CPython %s" % (tree.venv, ".".join(map(str, python.version))))
            rmtree(tree.venv)
            uv.create_venv(python.path, tree)
        else:
            gone = dropped_packages((record or {}).get("packages", []), [p.to_json() for p in source.packages()])
            if gone:
                uv.uninstall(tree, gone)
        packages = _install_all(uv, tree, staged.staging, source)
    _lock_mode(tree)
    if uv_exe == os.path.join(staged.staging, UV_REL):
        # Kept for later steps (models carry wheels) and for the user: the box has no other uv.
        os.makedirs(os.path.dirname(tree.bundled_uv), exist_ok=True)
        os.replace(uv_exe, tree.bundled_uv)
    inst.write_venv_record(tree, {
        "packages": packages,
        "python": ".".join(map(str, python.version)),
        "handmade": source.handmade,
        "source": source.label,
    })
    if source.manifest is not None:
        inst.write_manifest(tree, "packages", source.manifest)
    # uv's cache (the unpacked wheels, hard links of the venv's files) goes by one rename.
    set_aside(tree, tree.uv_cache)
    # uv does not fsync: its files must be on disk before the journal says the venv is done.
    if hasattr(os, "sync"):
        os.sync()
    state.finish("venv", digest)
    if source.manifest is not None:
        keep_venv_files(tree, staged.staging)  # after finish: a crash leaves the older base, never a partial one
    else:
        rmtree(staged.staging)


def _install_all(uv: Uv, tree: InstallTree, staging: str, source: PackagesSource) -> List[Dict[str, str]]:
    """One uv run on every staged wheel (an update, or a hand-made zip); the packages now installed."""
    wheels = os.path.join(staging, WHEELS_DIR)
    if source.handmade:
        requirements = os.path.join(staging, REQUIREMENTS_REL) if source.has(REQUIREMENTS_REL) else None
        uv_wheel = source.uv_wheel_rel()
        files = [] if requirements else [os.path.join(staging, r) for r in source.wheel_rels() if r != uv_wheel]
        uv.install(tree, wheels, requirements, files, require_hashes=False)
        return [{"name": n, "version": v} for n, v in sorted(installed_dists(tree).items())]
    requirements = os.path.join(staging, REQUIREMENTS_REL)
    uv.install(tree, wheels, requirements)
    _check_against_lock(uv, tree, wheels, requirements, source)
    return [{"name": p.name, "version": p.version} for p in source.packages()]


def _lock_mode(tree: InstallTree) -> None:
    """uv creates the venv's .lock world-writable whatever the umask; the installer's modes are 0644."""
    lock = os.path.join(tree.venv, ".lock")
    st = lstat_below(tree.venv, ".lock")
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o022:
        os.chmod(lock, 0o644)


def _check_against_lock(uv: Uv, tree: InstallTree, wheels: str, requirements: str, source: PackagesSource) -> None:
    """uv keeps a same-version distribution: reinstall what differs from the lock, then insist."""
    bad = mismatched(tree, wheels, source.packages())
    if bad:
        uv.install(tree, wheels, requirements, reinstall=[name for name, _why in bad])
        bad = mismatched(tree, wheels, source.packages())
    if bad:
        raise ArtifactRejected("the venv does not match the lock after uv installed it: %s" % bad[0][1],
                               "see .cosyinstall/install.log for uv's output")


# -- per-model steps (model_steps.py) -------------------------------------------------------


def _run_model_steps(run: Run, manifest: ArtifactManifest) -> None:
    tree = run.tree
    if not os.path.exists(tree.venv_python):
        return
    uv = tree.bundled_uv
    if not os.path.isfile(uv):
        uv = shutil.which("uv") or uv
    apply_model_steps(tree, manifest, run.uv(uv), run.reporter)
    _lock_mode(tree)
    set_aside(tree, tree.uv_cache)


def _rerun_model_steps(run: Run) -> None:
    """A rebuilt or changed venv loses the wheels the models carry: install them again."""
    digest = run.state.step_done("models")
    manifest = inst.installed_manifest(run.tree, "models")
    if digest is None or manifest is None:
        return
    # Un-recorded while it runs: a crash here makes the next apply redo the models step.
    run.state.mark("models", None)
    run.reporter.info("step models: re-running the model steps for the new venv")
    _run_model_steps(run, manifest)
    run.state.mark("models", digest)


_STAGE: Dict[str, Callable[[Run], Staged]] = {"app": _stage_app, "venv": _stage_venv, "models": _stage_models}
_COMMIT: Dict[str, Callable[[Run, Staged, str], None]] = {
    "app": _commit_app, "venv": _commit_venv, "models": _commit_models,
}
