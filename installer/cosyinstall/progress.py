"""Progress reporting: a live bar (bytes, rate, ETA) on a terminal, plain lines in logs.

Library code only emits events through a `Reporter`; the CLI chooses where they go.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from typing import IO, List, Optional

__all__ = ["Reporter", "Task", "human_bytes", "NullReporter"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return "%.1f GB" % n


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    if seconds >= 60:
        return "%dm%02ds" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


class Task:
    """One counted piece of long work; thread-safe `advance`."""

    def __init__(self, reporter: "Reporter", label: str, total: int) -> None:
        self.reporter = reporter
        self.label = label
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self._last_draw = self.start
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            interval = 0.2 if self.reporter.live else self.reporter.line_interval
            if now - self._last_draw >= interval:
                self._last_draw = now
                self.reporter._draw(self, final=False)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.done / elapsed
        text = "%s  %s" % (self.label, human_bytes(self.done))
        if self.total:
            pct = 100.0 * self.done / self.total if self.total else 100.0
            text += " / %s (%3.0f%%)" % (human_bytes(self.total), pct)
        text += "  %s/s" % human_bytes(rate)
        if self.total and rate > 0 and self.done < self.total:
            text += "  ETA %s" % _eta((self.total - self.done) / rate)
        else:
            text += "  %s" % _eta(elapsed)
        return text

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: object) -> None:
        self.reporter._draw(self, final=exc_type is None)
        if self.reporter.live:
            self.reporter.stream.write("\n" if exc_type is None else "\r\x1b[K")
            self.reporter.stream.flush()


class Reporter:
    """Writes progress to `stream` (live bar if it is a terminal) and plain lines to `log`."""

    def __init__(
        self,
        stream: Optional[IO[str]] = None,
        log: Optional[IO[str]] = None,
        live: Optional[bool] = None,
        quiet: bool = False,
        line_interval: float = 10.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.log = log
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = isatty() if live is None else live
        self.quiet = quiet
        self.line_interval = line_interval
        self.warnings: List[str] = []

    def task(self, label: str, total: int = 0) -> Task:
        return Task(self, label, total)

    def info(self, message: str) -> None:
        self._emit(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self._emit("WARNING: " + message, always=True)

    def _emit(self, message: str, always: bool = False) -> None:
        if not self.quiet or always:
            self.stream.write(message + "\n")
            self.stream.flush()
        self._log(message)

    def _log(self, message: str) -> None:
        if self.log is not None:
            self.log.write(time.strftime("%Y-%m-%d %H:%M:%S ") + message + "\n")
            self.log.flush()

    def _draw(self, task: Task, final: bool) -> None:
        text = task.line()
        if self.live and not self.quiet:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif final or not self.live:
            if not self.quiet:
                self.stream.write(text + "\n")
                self.stream.flush()
        if final or not self.live:
            self._log(text)


class NullReporter(Reporter):
    """A reporter that prints nothing; for library callers that want silence."""

    def __init__(self) -> None:
        super().__init__(stream=_Sink(), live=False, quiet=True)


class _Sink(io.StringIO):
    """A text stream that keeps nothing (a StringIO only for its type: nothing accumulates)."""

    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
