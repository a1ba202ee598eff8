"""The first start's work before the server: `[[server.prepare]]` steps and the app's own build outputs.

`before_start` runs, in the install tree, every prepare step that prepare_plan.py says must
(re)run: each directly (not under mpirun), in the venv's environment, with the app root as its
working directory, its output appended to .cosyinstall/prepare.log, the elapsed time and its last
log line shown meanwhile. A step is recorded in .cosyinstall/prepare.json only once it finished
and made its `creates`; one killed or failed is therefore cleaned and rerun by the next start.
It also removes `[server] build-outputs` when prepare_plan.py says so, and marks a first start
in progress until `after_ready` clears the mark.

A failed or timed-out step is exit 5 (NotReady): the artifacts and the box were accepted, the
server could not be brought up; the sentence names the step and its last log lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional

from cosyinstall import installed as inst
from cosyinstall.artifact import PrepareStep, ServerSpec
from cosyinstall.bundledpython import venv_libpython_dir
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable, NotReady
from cosyinstall.health import LogTail
from cosyinstall.launch import launch_env, with_libpython
from cosyinstall.prepare_plan import GpuId, describe_gpu, outputs_verdict, plan_steps, step_entry
from cosyinstall.probe import query_gpu
from cosyinstall.procs import start_time
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.server_log import marker
from cosyinstall.server_stop import terminate
from cosyinstall.tree import RESERVED_TOP, InstallTree
from cosyinstall.waitline import WaitLine
from cosyinstall.journal import json_bytes, read_json_object, write_atomic

__all__ = ["before_start", "after_ready", "load_record", "save_record", "gpu_identity", "models_digest", "tree_path"]

_POLL = 0.5
_KILL_GRACE = 5.0
_SHOW_LINES = 5


def load_record(tree: InstallTree) -> Dict[str, Any]:
    try:
        data = read_json_object(tree.prepare_record)  # bounded: a damaged record is no record
    except OSError:
        return {}
    return data or {}


def save_record(tree: InstallTree, record: Dict[str, Any]) -> None:
    # A start killed at any moment leaves the old record or the new one, never half of one.
    write_atomic(tree.prepare_record, json_bytes(record))


def gpu_identity() -> GpuId:
    gpu = query_gpu()
    return gpu.identity() if gpu is not None else None


def models_digest(tree: InstallTree) -> str:
    manifest = inst.installed_manifest(tree, "models")
    return manifest.digest() if manifest is not None else ""


def tree_path(tree: InstallTree, rel: str) -> str:
    """The absolute path of a manifest's `creates`/`clean`/`build-outputs` entry; refuses anything
    outside the app's part of the tree (the root itself, the venv, the installer's state)."""
    path = os.path.normpath(tree.app_path(rel))
    top = os.path.relpath(path, tree.root).split(os.sep)[0]
    if not tree.is_inside(path) or path == tree.root or top in (".", "..") or top in RESERVED_TOP[:2]:
        raise ArtifactRejected("the server's prepare paths may not name %s" % path,
                               "only paths under %s outside .venv and .cosyinstall can be cleaned" % tree.root)
    return path


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def before_start(tree: InstallTree, spec: ServerSpec, reporter: Optional[Reporter] = None, rebuild: bool = False) -> List[str]:
    """Bring the tree to where the server can start; the names of the steps that ran."""
    reporter = reporter or NullReporter()
    if not spec.prepare and not spec.build_outputs:
        return []
    os.makedirs(tree.state, exist_ok=True)
    record = load_record(tree)
    _stop_leftover_step(record)
    gpu = gpu_identity()
    models = models_digest(tree)
    outputs = [tree_path(tree, rel) for rel in spec.build_outputs]
    there = [p for p in outputs if os.path.lexists(p)]
    why = "--rebuild asked for it" if rebuild and there else outputs_verdict(record, gpu, bool(there))
    if why:
        for path in there:
            _remove(path)
        reporter.warn("removed %s, which the server builds again on this start: %s"
                      % (", ".join(os.path.relpath(p, tree.root) for p in there), why))
    actions = plan_steps(spec.prepare, record, gpu, models, lambda rel: os.path.exists(tree_path(tree, rel)), rebuild)
    ran: List[str] = []
    for action in actions:
        if not action.run:
            continue
        say = reporter.warn if action.gpu_changed else reporter.info
        say("prepare step %s: running it because %s" % (action.step.name, action.reason))
        _run_step(tree, action.step, record, gpu, models, reporter)
        ran.append(action.step.name)
    # Until after_ready, a start that ends early means the app's own outputs may be half-written.
    server: Dict[str, Any] = {"gpu": dict(gpu) if gpu else None}
    if any(not os.path.exists(p) for p in outputs):
        server["first-start"] = True
    record["server"] = server
    save_record(tree, record)
    if gpu is None and any(s.gpu_keyed for s in spec.prepare):
        reporter.warn("no GPU found (nvidia-smi): the GPU-bound prepare steps ran or were kept for %s" % describe_gpu(gpu))
    return ran


def after_ready(tree: InstallTree) -> None:
    """The server is ready: its own build outputs are complete."""
    record = load_record(tree)
    server = record.get("server")
    if isinstance(server, dict) and server.pop("first-start", None):
        save_record(tree, record)


def _stop_leftover_step(record: Dict[str, Any]) -> None:
    # A start killed while a step ran leaves that step running in its own session.
    running = record.pop("running", None)
    if isinstance(running, dict) and isinstance(running.get("pid"), int):
        terminate(running, grace=_KILL_GRACE)


def _env(tree: InstallTree) -> Dict[str, str]:
    return with_libpython(launch_env(tree), venv_libpython_dir(tree.venv))


def _run_step(tree: InstallTree, step: PrepareStep, record: Dict[str, Any], gpu: GpuId, models: str,
              reporter: Reporter) -> None:
    steps = record.setdefault("steps", {})
    steps.pop(step.name, None)
    save_record(tree, record)
    for rel in step.clean:
        _remove(tree_path(tree, rel))
    started = time.monotonic()
    with open(tree.prepare_log, "ab") as log:
        log.write(marker("prepare step %s: %s" % (step.name, " ".join(step.command))))
        log.flush()
        offset = log.tell()
        try:
            proc = subprocess.Popen(list(step.command), cwd=tree.app, env=_env(tree), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise EnvironmentUnsuitable("cannot run prepare step %s: %s (%s)" % (step.name, step.command[0],
                                        exc.strerror or exc), "check that it is installed in %s" % tree.venv) from None
    handle = {"pid": proc.pid, "pgid": proc.pid, "sid": proc.pid, "starttime": start_time(proc.pid),
              "venv": tree.venv, "step": step.name}
    record["running"] = handle
    save_record(tree, record)
    lines = _Lines()
    tail = LogTail(tree.prepare_log, offset)
    line = WaitLine(reporter, "prepare step %s" % step.name)
    code: Optional[int] = None
    try:
        while True:
            code = proc.poll()
            lines.feed(tail.read_new())
            if code is not None:
                break
            elapsed = time.monotonic() - started
            if elapsed >= step.timeout:
                raise NotReady("prepare step %s did not finish in %ds; %s" % (step.name, int(step.timeout), lines.tail()),
                               "see %s; raise its timeout in the manifest if the box is slow" % tree.prepare_log)
            line.show(elapsed, lines.last(), time.time())
            time.sleep(_POLL)
    except BaseException:
        line.clear()
        terminate(handle, grace=_KILL_GRACE)
        raise
    finally:
        if code is not None:
            line.clear()
        record.pop("running", None)
        save_record(tree, record)
    elapsed = time.monotonic() - started
    if code != 0:
        raise NotReady("prepare step %s failed with status %s after %ds; %s" % (step.name, code, int(elapsed), lines.tail()),
                       "see %s; the next start cleans it and runs it again" % tree.prepare_log)
    if not os.path.exists(tree_path(tree, step.creates)):
        raise NotReady("prepare step %s finished but did not create %s" % (step.name, step.creates),
                       "see %s" % tree.prepare_log)
    steps[step.name] = step_entry(step, gpu, models)
    save_record(tree, record)
    reporter.info("prepare step %s done in %ds" % (step.name, int(elapsed)))


class _Lines:
    """The last visible lines of a step's output (progress bars redraw a line after a bare CR)."""

    def __init__(self) -> None:
        self.lines: Deque[str] = deque(maxlen=_SHOW_LINES)
        self.partial = ""

    def feed(self, text: str) -> None:
        pieces = (self.partial + text).split("\n")
        self.partial = pieces.pop()
        for piece in pieces:
            shown = piece.split("\r")[-1].strip()
            if shown:
                self.lines.append(shown)

    def last(self) -> str:
        partial = self.partial.split("\r")[-1].strip()
        return partial or (self.lines[-1] if self.lines else "")

    def tail(self) -> str:
        shown = list(self.lines) + ([self.partial.strip()] if self.partial.strip() else [])
        return "its last log lines were: %s" % " | ".join(shown[-3:])[-400:] if shown else "it printed nothing"
