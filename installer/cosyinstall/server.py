"""The server's lifecycle in an installed tree: start detached, wait until ready, status, logs, stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import EnvironmentUnsuitable, NotReady
from cosyinstall.health import LogTail, http_status, port_in_use, port_open, who_holds_port
from cosyinstall.bundledpython import venv_libpython_dir
from cosyinstall.launch import find_mpirun, launch_argv, venv_dir, with_libpython
from cosyinstall.procs import (
    environ_value,
    forget_child,
    is_child,
    is_live,
    proc_stat,
    reap,
    session_processes,
    start_time,
    track_child,
)
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.readiness import DEFAULT_NO_PORT_GRACE, READY, Observation, Readiness

__all__ = [
    "STATE_DIR",
    "state_dir",
    "log_path",
    "pid_path",
    "read_record",
    "start_server",
    "wait_ready",
    "stop_server",
    "server_status",
    "tail_log",
    "follow_log",
]

STATE_DIR = ".cosyinstall"
_DRAIN_CHUNKS = 16
_STOP_ON_FAILURE_GRACE = 5.0


def state_dir(to: str) -> str:
    return os.path.join(os.path.abspath(to), STATE_DIR)


def log_path(to: str) -> str:
    return os.path.join(state_dir(to), "server.log")


def pid_path(to: str) -> str:
    return os.path.join(state_dir(to), "server.pid")


# -- the pid file -----------------------------------------------------------------------


def read_record(to: str) -> Optional[Dict[str, Any]]:
    """The pid file's content, or None when there is none or it is unreadable."""
    try:
        with open(pid_path(to), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or data["pid"] <= 1:
        return None
    return data


def _write_record(to: str, record: Dict[str, Any]) -> None:
    path = pid_path(to)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    # A reader sees the old file or the new one, never half of one.
    os.replace(tmp, path)


def _remove_record(to: str, pid: Optional[int] = None) -> None:
    current = read_record(to)
    if pid is not None and current is not None and current.get("pid") != pid:
        return
    try:
        os.unlink(pid_path(to))
    except FileNotFoundError:
        pass


def _log_marker(to: str, text: str) -> None:
    try:
        with open(log_path(to), "ab") as fh:
            fh.write(("==== cosyinstall %s: %s ====\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), text)).encode("utf-8"))
    except OSError:
        pass


def _is_ours(record: Dict[str, Any]) -> bool:
    """Whether the recorded pid is still the server we started, not a recycled pid."""
    pid = record["pid"]
    stat = proc_stat(pid)
    if not is_live(stat) or stat is None:
        return False
    if record.get("starttime") is not None and stat.starttime != record["starttime"]:
        return False
    return stat.pgrp == record.get("pgid", pid)


def _leftover_session(record: Dict[str, Any]) -> Optional[int]:
    """The session id whose members are ours to stop, or None when nothing can be ours.

    While any process is in a session the kernel keeps its id allocated, so if the leader
    is gone the id cannot have been recycled and every member is a leftover of our server;
    a live leader with another start time is a recycled pid, and then nothing is ours.
    """
    pid = record["pid"]
    sid = record.get("sid", pid)
    if not isinstance(sid, int) or sid <= 1 or sid in (os.getsid(0), os.getpid()):
        return None
    stat = proc_stat(pid)
    if stat is not None and record.get("starttime") is not None and stat.starttime != record["starttime"]:
        return None
    return sid


def _members(record: Dict[str, Any]) -> List[int]:
    """Live processes that belong to the recorded server: its whole session."""
    sid = _leftover_session(record)
    if sid is None:
        return [int(record["pid"])] if _is_ours(record) else []
    members = session_processes(sid)
    if not _is_ours(record) and record.get("venv"):
        # With the leader gone, also ask for the environment every process we launch
        # inherits, so that no foreign process is ever signalled on the word of a pid file.
        members = [m for m in members if environ_value(m, "VIRTUAL_ENV") == record["venv"]]
    return members


@contextmanager
def _start_lock(to: str) -> Iterator[None]:
    # Two `start` commands at once must not both find the port free and both launch.
    import fcntl

    with open(os.path.join(state_dir(to), "server.lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- start --------------------------------------------------------------------------------


def start_server(
    to: str,
    spec: ServerSpec,
    launcher: Optional[str] = None,
    port: Optional[int] = None,
    reporter: Optional[Reporter] = None,
) -> int:
    """Start the server detached from this process and return its pid.

    When our server already runs, say so and return its pid without starting another.
    """
    reporter = reporter or NullReporter()
    to = os.path.abspath(to)
    chosen = spec.launcher if launcher is None else launcher
    chosen_port = spec.port if port is None else port
    if not os.path.isdir(to):
        raise EnvironmentUnsuitable(
            "the install directory %s does not exist" % to, "run cosyinstall apply first or pass the right --to"
        )
    try:
        os.makedirs(state_dir(to), exist_ok=True)
    except OSError as exc:
        raise EnvironmentUnsuitable(
            "cannot create %s (%s)" % (state_dir(to), exc.strerror), "check the permissions of %s" % to
        )
    with _start_lock(to):
        record = read_record(to)
        if record is not None:
            if _is_ours(record):
                reporter.info(
                    "the server is already running (pid %d, port %s); log: %s"
                    % (record["pid"], record.get("port"), log_path(to))
                )
                if record.get("port") != chosen_port:
                    reporter.warn(
                        "the running server listens on port %s, not %d; run cosyinstall stop first to move it"
                        % (record.get("port"), chosen_port)
                    )
                return int(record["pid"])
            # The pid file outlived its server; clear what may be left of that session
            # so that a leftover child does not hold the port against the new start.
            _terminate(record, grace=2.0)
            _remove_record(to)
        if port_in_use(chosen_port):
            holder = who_holds_port(chosen_port)
            raise EnvironmentUnsuitable(
                "port %d is already in use%s, so the server cannot listen on it"
                % (chosen_port, " by " + holder if holder else ""),
                "stop that process or free port %d, then run cosyinstall start again" % chosen_port,
            )
        mpirun = find_mpirun(to) if chosen == "mpirun" else None
        argv, env = launch_argv(spec, to, chosen, chosen_port, os.environ, mpirun)
        env = with_libpython(env, venv_libpython_dir(venv_dir(to)))  # issue 10
        log = log_path(to)
        with open(log, "ab") as fh:
            fh.write(
                (
                    "==== cosyinstall %s: start with launcher %s on port %d: %s ====\n"
                    % (time.strftime("%Y-%m-%d %H:%M:%S"), chosen, chosen_port, " ".join(argv))
                ).encode("utf-8")
            )
            fh.flush()
            offset = fh.tell()
            try:
                # A new session: no terminal hangup or Ctrl-C of this command reaches the
                # server, and every process it spawns can be found again by session id.
                proc = subprocess.Popen(
                    argv,
                    cwd=to,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise EnvironmentUnsuitable(
                    "cannot run %s (%s)" % (argv[0], exc.strerror or exc),
                    "check that %s is installed in %s" % (os.path.basename(argv[0]), os.path.join(to, ".venv")),
                )
        track_child(proc)
        started_at = start_time(proc.pid)
        try:
            pgid = os.getpgid(proc.pid)
        except OSError:
            pgid = proc.pid
        record = {
            "pid": proc.pid,
            "pgid": pgid,
            "sid": proc.pid,
            "starttime": started_at,
            "port": chosen_port,
            "argv": argv,
            "started": time.time(),
            "launcher": chosen,
            "venv": env["VIRTUAL_ENV"],
            "health_path": spec.health_path,
            "ready_log": spec.ready_log,
            "log_offset": offset,
            "ready": None,
        }
        _write_record(to, record)
    reporter.info(
        "started the server (pid %d, launcher %s, port %d); log: %s" % (proc.pid, chosen, chosen_port, log)
    )
    return proc.pid


# -- wait ---------------------------------------------------------------------------------


def _exit_state(record: Dict[str, Any]) -> Tuple[bool, Optional[int]]:
    """(alive, exit status) of the recorded server; the status is known only for our child."""
    pid = record["pid"]
    if is_child(pid):
        code = reap(pid)
        return code is None, code
    return _is_ours(record), None


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


class _Progress:
    """Elapsed time and the last log line: a live line on a terminal, a line now and then otherwise."""

    def __init__(self, reporter: Reporter, port: int) -> None:
        self.reporter = reporter
        self.port = port
        self.last = 0.0
        self.drawn = False

    def show(self, elapsed: float, line: str, now: float) -> None:
        rep = self.reporter
        if rep.quiet:
            return
        if rep.live:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            text = "waiting for the server on port %d: %ds  %s" % (self.port, int(elapsed), line)
            rep.stream.write("\r\x1b[K" + _shorten(text, width))
            rep.stream.flush()
            self.drawn = True
        elif now - self.last >= rep.line_interval:
            self.last = now
            rep.info(
                "waiting for the server on port %d: %ds%s"
                % (self.port, int(elapsed), ", last log line: " + _shorten(line, 200) if line else "")
            )

    def clear(self) -> None:
        if self.drawn:
            self.reporter.stream.write("\r\x1b[K")
            self.reporter.stream.flush()
            self.drawn = False


def wait_ready(
    to: str,
    spec: ServerSpec,
    port: Optional[int] = None,
    reporter: Optional[Reporter] = None,
    poll: float = 0.5,
    no_port_grace: float = DEFAULT_NO_PORT_GRACE,
) -> None:
    """Block until the server is ready; on any failure stop all of it and raise NotReady.

    `port` matters only for a pid file that records none: the recorded port wins.
    """
    reporter = reporter or NullReporter()
    to = os.path.abspath(to)
    record = read_record(to)
    if record is None:
        raise NotReady("no server has been started in %s" % to, "run cosyinstall start")
    pid = int(record["pid"])
    # The pid file knows the port the server was really started on; a server found already
    # running must not be judged (and killed) by a port it never meant to open.
    recorded = record.get("port")
    chosen_port = recorded if isinstance(recorded, int) else (spec.port if port is None else port)
    log = log_path(to)
    # Wall-clock start from the pid file, advanced by the monotonic clock so a clock step
    # during a half-hour wait cannot fire or postpone a timeout.
    base = time.time() - time.monotonic()

    def now() -> float:
        return base + time.monotonic()

    checker = Readiness.from_spec(
        spec,
        start=float(record.get("started", now())),
        port=chosen_port,
        no_port_grace=no_port_grace,
        pid=pid,
        log_path=log,
        launcher=record.get("launcher") or spec.launcher,
    )
    # Silence is counted from when we began to watch, not from a start long ago.
    checker.last_output = max(checker.start, now())
    tail = LogTail(log, int(record.get("log_offset", 0)))
    progress = _Progress(reporter, chosen_port)

    while True:
        # Liveness first, log second: output written just before an exit is then not missed.
        alive, status = _exit_state(record)
        t = now()
        for _ in range(_DRAIN_CHUNKS):
            chunk = tail.read_new()
            if not chunk:
                break
            checker.feed(chunk, t)
        is_open = alive and port_open(chosen_port)
        code = http_status(chosen_port, spec.health_path) if is_open else None
        verdict = checker.observe(
            Observation(
                now=t,
                port_answered_2xx=code is not None and 200 <= code < 300,
                port_open=is_open,
                process_alive=alive,
                exit_status=status,
                http_status=code,
            )
        )
        if verdict.outcome == READY:
            progress.clear()
            current = read_record(to)
            if current is not None and current.get("pid") == pid:
                current["ready"] = time.time()
                _write_record(to, current)
            reporter.info(
                "the server is ready on http://127.0.0.1:%d%s (pid %d, %ds after start)"
                % (chosen_port, spec.health_path, pid, int(verdict.elapsed))
            )
            return
        if verdict.terminal:
            progress.clear()
            _terminate(record, grace=_STOP_ON_FAILURE_GRACE)
            _remove_record(to, pid)
            _log_marker(to, "not ready (%s), stopped: %s" % (verdict.outcome, verdict.message))
            raise verdict.error()
        progress.show(verdict.elapsed, verdict.last_line, t)
        time.sleep(poll)


# -- stop ---------------------------------------------------------------------------------


def _signal_all(pgid: Optional[int], pids: List[int], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass


def _terminate(record: Dict[str, Any], grace: float) -> bool:
    """Stop the recorded server and everything in its session; whether anything ran."""
    pid = int(record["pid"])
    ours = _is_ours(record)
    pgid = int(record.get("pgid", pid)) if ours else None
    if pgid is not None and (pgid <= 1 or pgid == os.getpgid(0)):
        pgid = None
    members = _members(record)
    if not ours and not members:
        reap(pid)
        return False
    # mpirun forwards SIGTERM to the app it launched, so the group gets it first; the
    # app sits in its own process group (prterun makes one per rank), hence the session
    # sweep later. With no launcher left, the leftovers are told directly.
    _signal_all(pgid, [] if ours else members, signal.SIGTERM)
    deadline = time.monotonic() + grace
    swept = False
    while True:
        reap(pid)
        left = _members(record)
        if not left:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _signal_all(pgid, left, signal.SIGKILL)
            break
        if not swept and remaining <= grace / 2:
            _signal_all(None, left, signal.SIGTERM)
            swept = True
        time.sleep(0.1)
    # SIGKILL cannot be ignored, but the kernel still needs a moment to tear processes down.
    # Every process seen so far is watched by pid until it is gone: a dying process may no
    # longer show the environment that _members uses to recognise it.
    doomed = set(left)
    settle = time.monotonic() + 5.0
    while time.monotonic() < settle:
        reap(pid)
        doomed = {p for p in doomed.union(_members(record)) if is_live(proc_stat(p))}
        if not doomed:
            break
        _signal_all(None, sorted(doomed), signal.SIGKILL)
        time.sleep(0.05)
    if reap(pid) is not None:
        forget_child(pid)
    return True


def stop_server(to: str, grace: float = 10.0) -> bool:
    """Stop the server and all it spawned: SIGTERM, then SIGKILL after `grace` seconds."""
    to = os.path.abspath(to)
    record = read_record(to)
    if record is None:
        return False
    ran = _terminate(record, grace)
    _remove_record(to, int(record["pid"]))
    if ran:
        _log_marker(to, "stopped the server (pid %d)" % record["pid"])
    return ran


# -- status and logs ----------------------------------------------------------------------


def server_status(to: str, spec: Optional[ServerSpec] = None) -> Dict[str, Any]:
    """running, ready (health checked now), pid, port, uptime (s), log path, and more.

    `stale_pid_file` says a pid file names a server that is gone; `leftovers` lists pids of
    its session still alive, which `stop_server` (or the next start) cleans up.
    """
    to = os.path.abspath(to)
    record = read_record(to)
    status: Dict[str, Any] = {
        "running": False,
        "ready": False,
        "pid": None,
        "port": spec.port if spec is not None else None,
        "uptime": None,
        "log": log_path(to),
        "launcher": None,
        "url": None,
        "http_status": None,
        "stale_pid_file": False,
        "leftovers": [],
    }
    if record is None:
        return status
    port = record.get("port", status["port"])
    health = record.get("health_path") or (spec.health_path if spec is not None else "/")
    status["port"] = port
    if not _is_ours(record):
        status["stale_pid_file"] = True
        # The launcher is gone but what it spawned may still run (and hold the port).
        status["leftovers"] = _members(record)
        return status
    status.update(
        running=True,
        pid=record["pid"],
        launcher=record.get("launcher"),
        uptime=max(time.time() - float(record.get("started", time.time())), 0.0),
    )
    if isinstance(port, int):
        status["url"] = "http://127.0.0.1:%d%s" % (port, health)
        code = http_status(port, health)
        status["http_status"] = code
        status["ready"] = code is not None and 200 <= code < 300
    return status


def _last_lines(path: str, lines: int, end: Optional[int] = None) -> List[str]:
    if lines <= 0:
        return []
    try:
        fh = open(path, "rb")
    except OSError:
        return []
    with fh:
        if end is None:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
        data = b""
        pos = end
        # Read backwards in blocks so a multi-gigabyte log costs no more than its tail.
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-lines:]


def tail_log(to: str, lines: int = 50) -> List[str]:
    """The last `lines` lines of server.log, without line ends; [] when there is no log."""
    return _last_lines(log_path(to), lines)


def follow_log(
    to: str,
    out: IO[str],
    lines: int = 10,
    poll: float = 0.5,
    stop: Optional[Callable[[], bool]] = None,
) -> None:
    """Print the last lines, then whatever is appended, until Ctrl-C (or `stop()` is true)."""
    path = log_path(to)
    try:
        try:
            start = os.path.getsize(path)
        except OSError:
            start = 0
        # Both halves cut at the same offset: no line is lost or shown twice between them.
        for line in _last_lines(path, lines, start):
            out.write(line + "\n")
        out.flush()
        tail = LogTail(path, start)
        while stop is None or not stop():
            text = tail.read_new()
            if text:
                out.write(text)
                out.flush()
            else:
                time.sleep(poll)
    except KeyboardInterrupt:
        pass
