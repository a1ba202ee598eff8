"""Progress: a live bar with bytes, rate and ETA on a terminal; plain timestamped lines in a log."""

from __future__ import annotations

import io
import re
import time

from cosyinstall.progress import Reporter, human_bytes


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_redrawn_bar_with_bytes_rate_and_eta() -> None:
    screen, log = Terminal(), io.StringIO()
    reporter = Reporter(stream=screen, log=log)
    assert reporter.live
    with reporter.task("extracting offline_packages.zip", 10 * 1024 * 1024) as task:
        for _ in range(4):
            time.sleep(0.21)  # past the redraw interval, so each advance draws
            task.advance(1024 * 1024)
        task.advance(6 * 1024 * 1024)
    out = screen.getvalue()
    frames = [f for f in out.split("\r\x1b[K") if f.strip()]
    assert len(frames) >= 3, out
    mid = frames[1]
    assert re.search(r"2\.0 MB / 10\.0 MB \( *20%\)", mid), mid
    assert re.search(r"[\d.]+ (KB|MB|GB)/s", mid) and "ETA" in mid, mid
    assert "10.0 MB / 10.0 MB (100%)" in frames[-1]
    # The log holds plain lines only: no carriage returns or escape codes.
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert "extracting offline_packages.zip  10.0 MB / 10.0 MB (100%)" in text


def test_a_pipe_gets_plain_lines_not_a_bar() -> None:
    pipe = io.StringIO()
    reporter = Reporter(stream=pipe, line_interval=0.1)
    assert not reporter.live
    with reporter.task("checking offline_packages.zip", 3000) as task:
        time.sleep(0.15)
        task.advance(1000)
        task.advance(2000)
    lines = pipe.getvalue().splitlines()
    assert "\r" not in pipe.getvalue()
    assert lines[0].startswith("checking offline_packages.zip  1000 B / 2.9 KB")
    assert lines[-1].startswith("checking offline_packages.zip  2.9 KB / 2.9 KB (100%)")


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(5 * 1024 ** 3) == "5.0 GB"
