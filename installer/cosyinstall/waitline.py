"""The line shown during a long wait on a process: elapsed time and its last log line.

Live (redrawn in place) on a terminal, a plain line now and then in logs and pipes.
"""

from __future__ import annotations

import shutil

from cosyinstall.progress import Reporter

__all__ = ["WaitLine", "shorten"]


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


class WaitLine:
    """`show` as often as you look; it draws at the reporter's pace. `clear` before printing anything else."""

    def __init__(self, reporter: Reporter, label: str) -> None:
        self.reporter = reporter
        self.label = label
        self.last = 0.0
        self.drawn = False

    def show(self, elapsed: float, line: str, now: float) -> None:
        rep = self.reporter
        if rep.quiet:
            return
        if rep.live:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            text = "%s: %ds  %s" % (self.label, int(elapsed), line)
            rep.stream.write("\r\x1b[K" + shorten(text, width))
            rep.stream.flush()
            self.drawn = True
        elif now - self.last >= rep.line_interval:
            self.last = now
            rep.info("%s: %ds%s" % (self.label, int(elapsed), ", last log line: " + shorten(line, 200) if line else ""))

    def clear(self) -> None:
        if self.drawn:
            self.reporter.stream.write("\r\x1b[K")
            self.reporter.stream.flush()
            self.drawn = False
