"""Deciding, from observations of a starting server, whether it is ready, still coming, or failed how."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Deque, List, Optional

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import NotReady

__all__ = [
    "READY",
    "WAITING",
    "EXITED",
    "HUNG",
    "NO_PORT",
    "TIMEOUT",
    "TERMINAL",
    "Observation",
    "Verdict",
    "Readiness",
    "describe_status",
]

READY = "ready"
WAITING = "waiting"
EXITED = "exited"
HUNG = "hung"
NO_PORT = "no-port"
TIMEOUT = "timeout"
TERMINAL = (EXITED, HUNG, NO_PORT, TIMEOUT)

DEFAULT_NO_PORT_GRACE = 60.0
_KEEP_LINES = 20
_SHOW_LINES = 3
_SHOW_CHARS = 400
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Observation:
    """One look at the server; `new_text` is log output appended since the previous look."""

    now: float
    new_text: str = ""
    ready_line_seen: bool = False
    port_answered_2xx: bool = False
    port_open: bool = False
    process_alive: bool = True
    exit_status: Optional[int] = None
    http_status: Optional[int] = None
    # CPU clock ticks used so far by the server's whole session; None when unknown.
    cpu_ticks: Optional[int] = None


@dataclass(frozen=True)
class Verdict:
    outcome: str
    message: str = ""
    hint: str = ""
    elapsed: float = 0.0
    last_line: str = ""

    @property
    def terminal(self) -> bool:
        return self.outcome in TERMINAL

    def error(self) -> NotReady:
        return NotReady(self.message, self.hint)


def describe_status(status: Optional[int]) -> str:
    """Exit status in words; Popen reports death by signal N as -N."""
    if status is None:
        return "an unknown status"
    if status < 0:
        return "signal %d" % -status
    return "status %d" % status


def _visible(line: str) -> str:
    """What a terminal would show of a line: progress bars redraw it after each bare CR."""
    segments = [seg for seg in line.split("\r") if seg.strip()]
    return _CONTROL.sub("", segments[-1]).strip() if segments else ""


def _seconds(value: float) -> str:
    return "%ds" % int(round(value)) if value >= 10 else "%.1fs" % value


class Readiness:
    """Feed it `Observation`s in time order; `observe` returns the current `Verdict`.

    Ready means the ready-log text appeared (when the spec names one) and the health URL
    answered 2xx. The failure modes are told apart because each needs a different fix.
    """

    def __init__(
        self,
        start: float,
        port: int,
        ready_log: str = "",
        health_path: str = "/",
        ready_timeout: float = 1800.0,
        silence_timeout: float = 600.0,
        no_port_grace: float = DEFAULT_NO_PORT_GRACE,
        pid: Optional[int] = None,
        log_path: str = "server.log",
        launcher: str = "mpirun",
    ) -> None:
        self.start = start
        self.port = port
        self.ready_log = ready_log
        self.health_path = health_path
        self.ready_timeout = ready_timeout
        self.silence_timeout = silence_timeout
        self.no_port_grace = no_port_grace
        self.pid = pid
        self.log_path = log_path
        self.launcher = launcher
        self.ready_seen_at: Optional[float] = None
        self.last_output = start
        # The last time the server's processes used CPU: a silent engine build is busy, not hung.
        self.last_busy = start
        self._cpu_seen: Optional[int] = None
        self.lines: Deque[str] = deque(maxlen=_KEEP_LINES)
        self._partial = ""
        self._carry = ""
        self.verdict = Verdict(WAITING)

    @classmethod
    def from_spec(
        cls,
        spec: ServerSpec,
        start: float,
        port: Optional[int] = None,
        no_port_grace: float = DEFAULT_NO_PORT_GRACE,
        pid: Optional[int] = None,
        log_path: str = "server.log",
        launcher: Optional[str] = None,
    ) -> "Readiness":
        return cls(
            start,
            spec.port if port is None else port,
            spec.ready_log,
            spec.health_path,
            spec.ready_timeout,
            spec.silence_timeout,
            no_port_grace,
            pid,
            log_path,
            spec.launcher if launcher is None else launcher,
        )

    # -- log bookkeeping -------------------------------------------------------------

    def feed(self, text: str, now: float) -> None:
        """Take log output that arrived by `now`; `observe` does this with `new_text`."""
        if not text:
            return
        self.last_output = now
        # Search the seam between chunks too: the ready text may arrive split in two reads.
        window = self._carry + text
        if self.ready_log and self.ready_seen_at is None and self.ready_log in window:
            self.ready_seen_at = now
        keep = max(len(self.ready_log) - 1, 0)
        self._carry = window[-keep:] if keep else ""
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()
        for piece in pieces:
            clean = _visible(piece)
            if clean:
                self.lines.append(clean)

    def last_lines(self, n: int = _SHOW_LINES) -> List[str]:
        out = list(self.lines)
        partial = _visible(self._partial)
        if partial:
            out.append(partial)
        return out[-n:]

    @property
    def last_line(self) -> str:
        lines = self.last_lines(1)
        return lines[0] if lines else ""

    def _tail_text(self) -> str:
        lines = self.last_lines()
        if not lines:
            return "it printed nothing"
        text = " | ".join(lines)
        if len(text) > _SHOW_CHARS:
            text = "..." + text[-_SHOW_CHARS:]
        return "its last log lines were: %s" % text

    # -- the decision ----------------------------------------------------------------

    @property
    def ready_seen(self) -> bool:
        return self.ready_seen_at is not None

    def _who(self) -> str:
        return "the server (pid %d)" % self.pid if self.pid is not None else "the server"

    def _url(self) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, self.health_path)

    def observe(self, obs: Observation) -> Verdict:
        if self.verdict.outcome == READY or self.verdict.terminal:
            return self.verdict
        self.feed(obs.new_text, obs.now)
        if obs.ready_line_seen and self.ready_seen_at is None:
            self.ready_seen_at = obs.now
        if obs.cpu_ticks is not None:
            if self._cpu_seen is not None and obs.cpu_ticks > self._cpu_seen:
                self.last_busy = obs.now
            self._cpu_seen = obs.cpu_ticks if self._cpu_seen is None else max(self._cpu_seen, obs.cpu_ticks)
        elapsed = obs.now - self.start
        verdict = self._decide(obs, elapsed)
        self.verdict = verdict
        return verdict

    def _decide(self, obs: Observation, elapsed: float) -> Verdict:
        last = self.last_line
        line_ok = self.ready_seen or not self.ready_log
        if obs.process_alive and obs.port_answered_2xx and line_ok:
            return Verdict(READY, "%s is ready on %s" % (self._who(), self._url()), "", elapsed, last)
        if not obs.process_alive:
            return Verdict(
                EXITED,
                "%s exited with %s after %s before it was ready on port %d; %s"
                % (self._who(), describe_status(obs.exit_status), _seconds(elapsed), self.port, self._tail_text()),
                "see %s for the whole log" % self.log_path,
                elapsed,
                last,
            )
        if elapsed >= self.ready_timeout:
            waited = "its ready line %r appeared" % self.ready_log if self.ready_seen else (
                "no ready line %r appeared" % self.ready_log if self.ready_log else "nothing answered"
            )
            return Verdict(
                TIMEOUT,
                "%s was not ready on %s after %s (%s); %s"
                % (self._who(), self._url(), _seconds(elapsed), waited, self._tail_text()),
                "see %s, and raise ready-timeout in the manifest if a first start really needs longer"
                % self.log_path,
                elapsed,
                last,
            )
        if self.ready_seen_at is not None and obs.now - self.ready_seen_at >= self.no_port_grace:
            answer = (
                "answered HTTP %d" % obs.http_status
                if obs.http_status is not None
                else ("accepted connections but gave no HTTP answer" if obs.port_open else "never opened")
            )
            return Verdict(
                NO_PORT,
                "%s printed its ready line %r %s ago but %s %s"
                % (self._who(), self.ready_log, _seconds(obs.now - self.ready_seen_at), self._url(), answer),
                "check that the server command listens on port %d and serves %s, and see %s"
                % (self.port, self.health_path, self.log_path),
                elapsed,
                last,
            )
        if (
            not self.ready_seen
            and not obs.port_open
            and obs.now - max(self.last_output, self.last_busy) >= self.silence_timeout
        ):
            idle = "" if obs.cpu_ticks is None else ", used no CPU time"
            return Verdict(
                HUNG,
                "%s printed nothing new for %s%s and port %d is still closed, the signature of a start that hangs"
                " in MPI initialisation; %s"
                % (self._who(), _seconds(obs.now - max(self.last_output, self.last_busy)), idle, self.port,
                   self._tail_text()),
                "check the %s launcher and run cosyinstall start --launcher direct to confirm" % self.launcher
                if self.launcher == "mpirun"
                else "start with --launcher mpirun, which the tensorrt_llm import needs to get past MPI initialisation",
                elapsed,
                last,
            )
        return Verdict(WAITING, "", "", elapsed, last)
