"""The readiness evaluator, fed hand-made observations: no process, no socket, no clock."""

from __future__ import annotations

import pytest

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import NotReady
from cosyinstall.readiness import (
    EXITED,
    HUNG,
    NO_PORT,
    READY,
    TIMEOUT,
    WAITING,
    Observation,
    Readiness,
    describe_status,
)
from cosyinstall.tree import InstallTree

PORT = 6008


def make(**kw) -> Readiness:
    args = dict(
        start=100.0,
        port=PORT,
        ready_log="启动在端口",
        health_path="/",
        ready_timeout=600.0,
        silence_timeout=30.0,
        no_port_grace=20.0,
        pid=4242,
        log_path=InstallTree("/srv/cosy").server_log,
        launcher="mpirun",
    )
    args.update(kw)
    return Readiness(**args)


def obs(t: float, text: str = "", **kw) -> Observation:
    return Observation(now=t, new_text=text, **kw)


def one_sentence(message: str) -> None:
    assert "\n" not in message
    assert message.endswith(".")


def test_ready_needs_ready_line_and_2xx() -> None:
    r = make()
    assert r.observe(obs(101, "loading models\n")).outcome == WAITING
    # The port answering before the ready line is not enough: the contract asks for both.
    assert r.observe(obs(102, "", port_open=True, port_answered_2xx=True)).outcome == WAITING
    line = "🚀 FastCosyVoice TTS Server 启动在端口 6008\n"
    assert r.observe(obs(103, line, port_open=True)).outcome == WAITING
    verdict = r.observe(obs(104, "", port_open=True, port_answered_2xx=True, http_status=200))
    assert verdict.outcome == READY
    assert verdict.elapsed == pytest.approx(4.0)


def test_ready_line_flag_from_the_caller_counts() -> None:
    r = make()
    assert r.observe(obs(101, ready_line_seen=True, port_open=True, port_answered_2xx=True)).outcome == READY


def test_no_ready_log_means_health_alone() -> None:
    r = make(ready_log="")
    assert r.observe(obs(101, "anything\n")).outcome == WAITING
    assert r.observe(obs(102, port_open=True, port_answered_2xx=True)).outcome == READY


def test_ready_line_split_across_reads_is_found() -> None:
    r = make(ready_log="READY on port")
    r.observe(obs(101, "Server REA"))
    r.observe(obs(102, "DY on port 6008\n"))
    assert r.ready_seen
    assert r.observe(obs(103, port_open=True, port_answered_2xx=True)).outcome == READY


def test_exit_names_status_and_last_lines() -> None:
    r = make()
    r.observe(obs(101, "a\nb\nTraceback (most recent call last):\nImportError: libmpi.so.40 missing\n"))
    verdict = r.observe(obs(103, process_alive=False, exit_status=3))
    assert verdict.outcome == EXITED and verdict.terminal
    err = verdict.error()
    assert isinstance(err, NotReady) and err.exit_code == 5
    text = str(err)
    one_sentence(text)
    assert "status 3" in text and "4242" in text and str(PORT) in text
    assert "ImportError: libmpi.so.40 missing" in text
    assert "server.log" in text
    assert "a |" not in text, "only the last few lines are quoted"


def test_exit_by_signal_and_unknown_status() -> None:
    assert describe_status(-9) == "signal 9"
    assert describe_status(None) == "an unknown status"
    r = make()
    assert "signal 9" in r.observe(obs(101, process_alive=False, exit_status=-9)).message


def test_exit_beats_a_port_answering() -> None:
    r = make(ready_log="")
    assert r.observe(obs(101, process_alive=False, port_answered_2xx=True, exit_status=0)).outcome == EXITED


def test_silence_with_closed_port_is_the_mpi_hang() -> None:
    r = make(silence_timeout=30.0)
    r.observe(obs(105, "[TensorRT-LLM] importing\n"))
    assert r.observe(obs(134.9)).outcome == WAITING
    verdict = r.observe(obs(135))
    assert verdict.outcome == HUNG
    text = str(verdict.error())
    one_sentence(text)
    assert "--launcher direct" in text and "mpirun" in text and str(PORT) in text
    assert "[TensorRT-LLM] importing" in text


def test_output_restarts_the_silence_clock() -> None:
    r = make(silence_timeout=30.0)
    for t in range(101, 200, 20):
        assert r.observe(obs(t, "building engine layer %d\n" % t)).outcome == WAITING


def test_silence_with_open_port_is_not_a_hang() -> None:
    r = make(silence_timeout=30.0)
    assert r.observe(obs(200, port_open=True, http_status=404)).outcome == WAITING


def test_direct_launcher_hang_suggests_mpirun() -> None:
    r = make(silence_timeout=5.0, launcher="direct")
    verdict = r.observe(obs(106))
    assert verdict.outcome == HUNG
    assert "--launcher mpirun" in str(verdict.error())


def test_ready_line_without_port_after_grace() -> None:
    r = make(no_port_grace=20.0, silence_timeout=5.0)
    r.observe(obs(110, "Server 启动在端口 6008\n"))
    # Silent and closed after the ready line is not the hang: the grace decides.
    assert r.observe(obs(129.9)).outcome == WAITING
    verdict = r.observe(obs(130))
    assert verdict.outcome == NO_PORT
    text = str(verdict.error())
    one_sentence(text)
    assert "http://127.0.0.1:6008/" in text and "never opened" in text


def test_ready_line_with_wrong_status_names_it() -> None:
    r = make(no_port_grace=10.0, health_path="/api/speakers")
    r.observe(obs(101, "启动在端口\n"))
    verdict = r.observe(obs(112, port_open=True, http_status=500))
    assert verdict.outcome == NO_PORT
    assert "HTTP 500" in verdict.message and "/api/speakers" in verdict.message


def test_timeout_while_still_talking() -> None:
    r = make(ready_timeout=60.0, silence_timeout=30.0)
    for t in range(110, 160, 10):
        assert r.observe(obs(t, "step %d\n" % t)).outcome == WAITING
    verdict = r.observe(obs(160, "step 160\n"))
    assert verdict.outcome == TIMEOUT
    text = str(verdict.error())
    one_sentence(text)
    assert "60s" in text and "ready-timeout" in text and "step 160" in text


def test_a_terminal_verdict_sticks() -> None:
    r = make()
    first = r.observe(obs(101, process_alive=False, exit_status=1))
    assert r.observe(obs(102, ready_line_seen=True, port_answered_2xx=True)) == first


def test_log_lines_are_cleaned_for_the_message() -> None:
    r = make()
    r.observe(obs(101, "\x1b[32mgreen\x1b[0m\r\nprogress 10%\rprogress 90%\r\n\n\n  last words  "))
    assert r.last_lines(3) == ["green", "progress 90%", "last words"]
    assert r.last_line == "last words"


def test_from_spec_uses_spec_timeouts() -> None:
    spec = ServerSpec(
        command=("python", "x.py"), launcher="direct", port=7000, ready_log="up", health_path="/h",
        ready_timeout=50.0, silence_timeout=7.0,
    )
    r = Readiness.from_spec(spec, start=0.0, port=7100, no_port_grace=3.0)
    assert (r.port, r.ready_log, r.health_path, r.ready_timeout, r.silence_timeout, r.no_port_grace, r.launcher) == (
        7100, "up", "/h", 50.0, 7.0, 3.0, "direct",
    )
