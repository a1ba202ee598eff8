"""Starting the server detached: one start at a time, the port checked, a new session, the pid record written."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import EnvironmentUnsuitable
from cosyinstall.health import port_in_use, who_holds_port
from cosyinstall.bundledpython import venv_libpython_dir
from cosyinstall.launch import find_mpirun, launch_argv, with_libpython
from cosyinstall.procs import start_time, track_child
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.server_log import marker
from cosyinstall.server_record import is_ours, read_record, remove_record, write_record
from cosyinstall.server_stop import terminate
from cosyinstall.tree import InstallTree

__all__ = ["start_server"]

# A stale record's leftovers get a short grace: they are being cleared, not shut down gently.
_LEFTOVER_GRACE = 2.0


def start_server(
    tree: InstallTree,
    spec: ServerSpec,
    launcher: Optional[str] = None,
    port: Optional[int] = None,
    reporter: Optional[Reporter] = None,
) -> int:
    """Start the server detached from this process and return its pid.

    When our server already runs, say so and return its pid without starting another.
    """
    reporter = reporter or NullReporter()
    chosen = spec.launcher if launcher is None else launcher
    chosen_port = spec.port if port is None else port
    _ensure_state(tree)
    with _start_lock(tree):
        running = _running_pid(tree, chosen_port, reporter)
        if running is not None:
            return running
        _refuse_taken_port(chosen_port)
        mpirun = find_mpirun(tree) if chosen == "mpirun" else None
        argv, env = launch_argv(spec, tree, chosen, chosen_port, os.environ, mpirun)
        env = with_libpython(env, venv_libpython_dir(tree.venv))  # TensorRT-LLM dlopens libpython3.X.so.1.0
        proc, offset = _spawn(tree, argv, env, chosen, chosen_port)
        write_record(tree, _new_record(proc, argv, env, spec, chosen, chosen_port, offset))
    reporter.info(
        "started the server (pid %d, launcher %s, port %d); log: %s" % (proc.pid, chosen, chosen_port, tree.server_log)
    )
    return proc.pid


def _ensure_state(tree: InstallTree) -> None:
    if not os.path.isdir(tree.root):
        raise EnvironmentUnsuitable(
            "the install directory %s does not exist" % tree.root, "run cosyinstall apply first or pass the right --to"
        )
    try:
        os.makedirs(tree.state, exist_ok=True)
    except OSError as exc:
        raise EnvironmentUnsuitable(
            "cannot create %s (%s)" % (tree.state, exc.strerror), "check the permissions of %s" % tree.root
        ) from exc


@contextmanager
def _start_lock(tree: InstallTree) -> Iterator[None]:
    # Two `start` commands at once must not both find the port free and both launch.
    import fcntl

    with open(tree.server_lock, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _running_pid(tree: InstallTree, port: int, reporter: Reporter) -> Optional[int]:
    """The pid of our server when it already runs; a stale record is cleared on the way."""
    record = read_record(tree)
    if record is None:
        return None
    if is_ours(record):
        reporter.info(
            "the server is already running (pid %d, port %s); log: %s" % (record["pid"], record.get("port"), tree.server_log)
        )
        if record.get("port") != port:
            reporter.warn(
                "the running server listens on port %s, not %d; run cosyinstall stop first to move it"
                % (record.get("port"), port)
            )
        return int(record["pid"])
    # The record outlived its server; clear what may be left of that session so that a
    # leftover child does not hold the port against the new start.
    terminate(record, grace=_LEFTOVER_GRACE)
    remove_record(tree)
    return None


def _refuse_taken_port(port: int) -> None:
    if port_in_use(port):
        holder = who_holds_port(port)
        raise EnvironmentUnsuitable(
            "port %d is already in use%s, so the server cannot listen on it" % (port, " by " + holder if holder else ""),
            "stop that process or free port %d, then run cosyinstall start again" % port,
        )


def _spawn(
    tree: InstallTree, argv: List[str], env: Dict[str, str], launcher: str, port: int
) -> Tuple["subprocess.Popen[bytes]", int]:
    """Launch `argv` in a new session writing to server.log; the Popen and the log offset its output starts at."""
    with open(tree.server_log, "ab") as fh:
        fh.write(marker("start with launcher %s on port %d: %s" % (launcher, port, " ".join(argv))))
        fh.flush()
        offset = fh.tell()
        try:
            # A new session: no terminal hangup or Ctrl-C of this command reaches the
            # server, and every process it spawns can be found again by session id.
            proc = subprocess.Popen(
                argv,
                cwd=tree.app,
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
                "check that %s is installed in %s" % (os.path.basename(argv[0]), tree.venv),
            ) from exc
    track_child(proc)
    return proc, offset


def _new_record(
    proc: "subprocess.Popen[bytes]",
    argv: List[str],
    env: Dict[str, str],
    spec: ServerSpec,
    launcher: str,
    port: int,
    offset: int,
) -> Dict[str, Any]:
    try:
        pgid = os.getpgid(proc.pid)
    except OSError:
        pgid = proc.pid
    return {
        "pid": proc.pid,
        "pgid": pgid,
        "sid": proc.pid,
        "starttime": start_time(proc.pid),
        "port": port,
        "argv": argv,
        "started": time.time(),
        "launcher": launcher,
        "venv": env["VIRTUAL_ENV"],
        "health_path": spec.health_path,
        "ready_log": spec.ready_log,
        "log_offset": offset,
        "ready": None,
    }
