"""Waiting until a started server is ready: look at it (process, log, port, health) and let readiness.py decide.

Each look gathers the facts into an `Observation`; `Readiness` (pure) turns them into a
verdict. On a failure verdict everything of the server is stopped, so a failed start leaves
nothing running.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import NotReady
from cosyinstall.health import LogTail, http_status, port_open
from cosyinstall.procs import is_child, reap, session_cpu_ticks
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.readiness import DEFAULT_NO_PORT_GRACE, READY, Observation, Readiness, Verdict
from cosyinstall.server_log import log_marker
from cosyinstall.server_record import is_ours, read_record, remove_record, write_record
from cosyinstall.server_stop import terminate
from cosyinstall.synth_probe import check_probe, run_probe
from cosyinstall.tree import InstallTree
from cosyinstall.waitline import WaitLine

__all__ = ["wait_ready"]

# Bounds one look's log reading, so a server flooding its log is still checked for health.
_DRAIN_CHUNKS = 16
_STOP_ON_FAILURE_GRACE = 5.0


def wait_ready(
    tree: InstallTree,
    spec: ServerSpec,
    port: Optional[int] = None,
    reporter: Optional[Reporter] = None,
    poll: float = 0.5,
    no_port_grace: float = DEFAULT_NO_PORT_GRACE,
) -> None:
    """Block until the server is ready; on any failure stop all of it and raise NotReady.

    `port` matters only for a pid record that names none: the recorded port wins.
    """
    reporter = reporter or NullReporter()
    record = read_record(tree)
    if record is None:
        raise NotReady("no server has been started in %s" % tree.root, "run cosyinstall start")
    chosen_port = _recorded_port(record, spec, port)
    now = _wall_clock()
    checker = Readiness.from_spec(
        spec,
        start=float(record.get("started", now())),
        port=chosen_port,
        no_port_grace=no_port_grace,
        pid=int(record["pid"]),
        log_path=tree.server_log,
        launcher=record.get("launcher") or spec.launcher,
    )
    # Silence is counted from when we began to watch, not from a start long ago.
    checker.last_output = max(checker.start, now())
    watch = _Watch(record, LogTail(tree.server_log, int(record.get("log_offset", 0))), chosen_port, spec.health_path)
    line = WaitLine(reporter, "waiting for the server on port %d" % chosen_port)
    while True:
        obs = watch.look(checker, now)
        verdict = checker.observe(obs)
        if verdict.outcome == READY:
            line.clear()
            _probe(tree, record, spec, chosen_port, reporter)
            _mark_ready(tree, record, spec, chosen_port, verdict, reporter)
            return
        if verdict.terminal:
            line.clear()
            raise _give_up(tree, record, verdict)
        line.show(verdict.elapsed, verdict.last_line, obs.now)
        time.sleep(poll)


def _recorded_port(record: Dict[str, Any], spec: ServerSpec, port: Optional[int]) -> int:
    # The record knows the port the server was really started on; a server found already
    # running must not be judged (and killed) by a port it never meant to open.
    recorded = record.get("port")
    return recorded if isinstance(recorded, int) else (spec.port if port is None else port)


def _wall_clock() -> Callable[[], float]:
    # Wall-clock time (comparable with the record's start), advanced by the monotonic clock
    # so that a clock step during a half-hour wait cannot fire or postpone a timeout.
    base = time.time() - time.monotonic()
    return lambda: base + time.monotonic()


def _exit_state(record: Dict[str, Any]) -> Tuple[bool, Optional[int]]:
    """(alive, exit status) of the recorded server; the status is known only for our child."""
    pid = record["pid"]
    if is_child(pid):
        code = reap(pid)
        return code is None, code
    return is_ours(record), None


class _Watch:
    """Looks at the started server: every fact the readiness decision takes is gathered here."""

    def __init__(self, record: Dict[str, Any], tail: LogTail, port: int, health_path: str) -> None:
        self.record = record
        self.tail = tail
        self.port = port
        self.health_path = health_path

    def look(self, checker: Readiness, clock: Callable[[], float]) -> Observation:
        """One look; new log output goes straight to `checker`, the rest into the Observation."""
        # Liveness first, log second: output written just before an exit is then not missed.
        alive, status = _exit_state(self.record)
        t = clock()
        for _ in range(_DRAIN_CHUNKS):
            chunk = self.tail.read_new()
            if not chunk:
                break
            checker.feed(chunk, t)
        is_open = alive and port_open(self.port)
        code = http_status(self.port, self.health_path) if is_open else None
        sid = self.record.get("sid", self.record["pid"])
        return Observation(
            cpu_ticks=session_cpu_ticks(sid) if alive and isinstance(sid, int) else None,
            now=t,
            port_answered_2xx=code is not None and 200 <= code < 300,
            port_open=is_open,
            process_alive=alive,
            exit_status=status,
            http_status=code,
        )


def _mark_ready(
    tree: InstallTree, record: Dict[str, Any], spec: ServerSpec, port: int, verdict: Verdict, reporter: Reporter
) -> None:
    pid = int(record["pid"])
    current = read_record(tree)
    if current is not None and current.get("pid") == pid:
        current["ready"] = time.time()
        write_record(tree, current)
    reporter.info(
        "the server is ready on http://127.0.0.1:%d%s (pid %d, %ds after start)"
        % (port, spec.health_path, pid, int(verdict.elapsed))
    )


def _probe(tree: InstallTree, record: Dict[str, Any], spec: ServerSpec, port: int, reporter: Reporter) -> None:
    """The synthesis probe, once, after health answered; a failure stops the server (exit 5)."""
    if spec.probe is None:
        return
    reporter.info("health answered; sending the synthesis probe %s %s" % (spec.probe.method, spec.probe.path))
    result = run_probe(tree, spec.probe, port)
    error = check_probe(result, spec.probe, port, tree.server_log)
    if error is None:
        reporter.info("the synthesis probe got %d bytes of %s in %.1fs"
                      % (result.size, result.content_type or "audio", result.seconds))
        return
    terminate(record, grace=_STOP_ON_FAILURE_GRACE)
    remove_record(tree, int(record["pid"]))
    log_marker(tree, "not ready (probe failed), stopped: %s" % error.message)
    raise error


def _give_up(tree: InstallTree, record: Dict[str, Any], verdict: Verdict) -> NotReady:
    """Stop all of a server that will not be ready; the error to raise."""
    terminate(record, grace=_STOP_ON_FAILURE_GRACE)
    remove_record(tree, int(record["pid"]))
    log_marker(tree, "not ready (%s), stopped: %s" % (verdict.outcome, verdict.message))
    return verdict.error()
