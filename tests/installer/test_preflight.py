"""Preflight: pure judgement of BoxFacts against the target, and the probes that gather them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.preflight import (
    MARGIN_BYTES,
    Finding,
    choose_python,
    cuda_major,
    evaluate,
    need_with_margin,
    parse_platform,
    parse_version,
    raise_first,
    render,
)
from cosyinstall.probe import BoxFacts, PythonFound, gather, probe_python

GB = 1024 ** 3
TARGET = {"python": "3.10", "platform": "x86_64-manylinux_2_28"}


def _facts(**kw) -> BoxFacts:
    base = dict(
        machine="x86_64", glibc=(2, 35),
        pythons=[PythonFound("/usr/bin/python3.10", (3, 10, 12), "CPython")],
        python_asked=None, python_failures=[], free_bytes=100 * GB, space_path="/root/autodl-tmp",
        writable=True, gpu_driver="535.104.05", gpu_name="NVIDIA A100",
    )
    base.update(kw)
    return BoxFacts(**base)


def _row(findings, check: str) -> Finding:
    return next(f for f in findings if f.check == check)


def test_a_good_box_passes_every_blocking_check() -> None:
    findings = evaluate(_facts(), TARGET, 5 * GB, cuda=12)
    raise_first(findings)
    assert [f.check for f in findings] == ["python", "machine", "glibc", "disk", "write", "gpu"]
    assert all(f.ok for f in findings)
    table = render(findings)
    assert "CPython 3.10.12 at /usr/bin/python3.10" in table and "driver 535.104.05" in table


def test_wrong_python_minor_blocks_with_exit_4_and_names_what_was_found() -> None:
    facts = _facts(pythons=[PythonFound("/opt/conda/bin/python3", (3, 12, 1), "CPython")],
                   python_failures=["/opt/example/shims/python3.10"])
    findings = evaluate(facts, TARGET, GB)
    row = _row(findings, "python")
    assert not row.ok and "no CPython 3.10 found" in row.detail and "/opt/conda/bin/python3 3.12" in row.detail
    assert "skipped 1 that did not run: /opt/example/shims/python3.10" in row.detail
    with pytest.raises(EnvironmentUnsuitable) as err:
        raise_first(findings)
    assert err.value.exit_code == 4 and "--python" in err.value.hint


def test_pypy_of_the_right_minor_is_not_taken() -> None:
    facts = _facts(pythons=[PythonFound("/usr/bin/pypy3", (3, 10, 13), "PyPy")])
    assert choose_python(facts, "3.10") is None


def test_any_cpython_3_will_do_when_the_target_does_not_say() -> None:
    facts = _facts(pythons=[PythonFound("/usr/bin/python3.12", (3, 12, 3), "CPython")])
    assert choose_python(facts, None).path == "/usr/bin/python3.12"


def test_python_asked_for_that_does_not_run_is_named() -> None:
    facts = _facts(pythons=[], python_asked="/nope/python")
    row = _row(evaluate(facts, TARGET, GB), "python")
    assert not row.ok and "--python /nope/python does not run" in row.detail


def test_python_is_not_needed_when_the_venv_step_will_not_run() -> None:
    row = _row(evaluate(_facts(pythons=[]), TARGET, GB, need_python=False), "python")
    assert row.ok and "not needed" in row.detail


def test_machine_and_glibc_are_judged_from_the_platform_tag() -> None:
    assert parse_platform("x86_64-manylinux_2_28") == ("x86_64", (2, 28))
    assert parse_platform("aarch64-manylinux2014") == ("aarch64", (2, 17))
    assert parse_platform("x86_64-unknown-linux-gnu") == ("x86_64", None)
    assert parse_platform("linux") == ("x86_64", None)
    old = evaluate(_facts(glibc=(2, 27)), TARGET, GB)
    assert not _row(old, "glibc").ok and "2.27 is older than the 2.28" in _row(old, "glibc").detail
    arm = evaluate(_facts(machine="aarch64"), TARGET, GB)
    assert not _row(arm, "machine").ok and "for x86_64 but this box is aarch64" in _row(arm, "machine").detail
    musl = evaluate(_facts(glibc=None), TARGET, GB)
    assert not _row(musl, "glibc").ok


def test_wheels_for_another_os_in_a_hand_made_zip_are_named() -> None:
    target = {"platform": "x86_64-manylinux_2_17", "foreign-wheels": ["numpy-2.0-cp310-cp310-win_amd64.whl"]}
    row = _row(evaluate(_facts(), target, GB), "machine")
    assert not row.ok and "win_amd64" in row.detail


def test_disk_needs_the_bytes_plus_a_margin() -> None:
    need = 10 * GB
    assert need_with_margin(need) > need + MARGIN_BYTES
    tight = evaluate(_facts(free_bytes=need + 1), TARGET, need)
    row = _row(tight, "disk")
    assert not row.ok and row.blocking and "free on /root/autodl-tmp but about" in row.detail
    roomy = evaluate(_facts(free_bytes=need_with_margin(need)), TARGET, need)
    assert _row(roomy, "disk").ok


def test_no_write_permission_blocks() -> None:
    row = _row(evaluate(_facts(writable=False), TARGET, GB), "write")
    assert not row.ok and row.blocking and "/root/autodl-tmp" in row.detail


def test_cuda_major_comes_from_the_nvidia_wheels_in_the_lock() -> None:
    packages = [{"name": "torch"}, {"name": "nvidia-cuda-runtime-cu12"}, {"name": "nvidia_cublas_cu12"}]
    assert cuda_major(packages) == 12
    assert cuda_major([{"name": "nvidia-ml-py"}, {"name": "six"}]) is None
    assert cuda_major([{"name": "nvidia-cuda-runtime-cu11"}]) == 11


def test_an_old_driver_is_a_warning_not_a_refusal() -> None:
    findings = evaluate(_facts(gpu_driver="470.82.01"), TARGET, GB, cuda=12)
    row = _row(findings, "gpu")
    assert not row.ok and not row.blocking and row.status == "warn"
    assert "470.82.01 is older than 525.60.13, the minimum for the CUDA 12 wheels" in row.detail
    raise_first(findings)  # still installs
    assert _row(evaluate(_facts(gpu_driver="525.60.13"), TARGET, GB, cuda=12), "gpu").ok
    assert parse_version("535.104.05") == (535, 104, 5)


def test_no_gpu_is_a_warning() -> None:
    row = _row(evaluate(_facts(gpu_driver=None, gpu_name=None), TARGET, GB, cuda=12), "gpu")
    assert row.status == "warn" and "CUDA 12" in row.detail


def test_an_artifact_failure_raises_exit_3_before_box_failures() -> None:
    findings = [Finding("offline_packages.zip", False, "offline_packages.zip is truncated", code=3),
                Finding("disk", False, "no space")]
    with pytest.raises(ArtifactRejected):
        raise_first(findings)


# -- the probes (real subprocesses: interpreters and a clearly named nvidia-smi double) -----


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_candidates_that_do_not_run_are_skipped(tmp_path: Path) -> None:
    broken = _script(tmp_path / "python3.10", "echo 'pyenv: python3.10: command not found' >&2; exit 127\n")
    assert probe_python(str(broken)) is None
    facts = gather(str(tmp_path / "to"), "3.10", python=str(broken))
    assert facts.pythons == [] and facts.python_failures == [str(broken)]
    row = _row(evaluate(facts, TARGET, 0), "python")
    assert not row.ok and "does not run" in row.detail


def test_probing_is_skipped_when_no_venv_will_be_built(tmp_path: Path) -> None:
    facts = gather(str(tmp_path / "to" / "deeper"), "3.10", want_python=False)
    assert facts.pythons == [] and facts.python_failures == []
    assert facts.space_path == str(tmp_path) and facts.writable and facts.free_bytes


def test_nvidia_driver_is_read_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # FakeNvidiaSmi: a test double standing in for the real nvidia-smi on this GPU-less machine.
    fake_dir = tmp_path / "FakeNvidiaSmi"
    fake_dir.mkdir()
    _script(fake_dir / "nvidia-smi",
            "# FakeNvidiaSmi test double: answers the one query cosyinstall makes\n"
            "echo 'NVIDIA GeForce RTX 3090, 8.6, 470.82.01, 24576'\n")
    monkeypatch.setenv("PATH", str(fake_dir) + os.pathsep + os.environ["PATH"])
    facts = gather(str(tmp_path), "3.10", want_python=False)
    assert (facts.gpu_driver, facts.gpu_name) == ("470.82.01", "NVIDIA GeForce RTX 3090")
    row = _row(evaluate(facts, TARGET, 0, need_python=False, cuda=12), "gpu")
    assert row.status == "warn" and "older than 525.60.13" in row.detail


def test_a_failing_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dir = tmp_path / "FakeNvidiaSmi"
    fake_dir.mkdir()
    _script(fake_dir / "nvidia-smi",
            "# FakeNvidiaSmi test double: a driver that is not loaded\n"
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9\n")
    monkeypatch.setenv("PATH", str(fake_dir) + os.pathsep + os.environ["PATH"])
    facts = gather(str(tmp_path), "3.10", want_python=False)
    assert facts.gpu_driver is None
