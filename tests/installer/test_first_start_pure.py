"""The first start's pure decisions: which prepare steps rerun, when build outputs go, the GPU
preflight rows, and readiness counting CPU time as activity."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosyinstall.artifact import ArtifactManifest, GpuRequirement, PrepareStep, ServerSpec
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.prepare_plan import outputs_verdict, plan_steps, step_entry
from cosyinstall.preflight import evaluate, first_blocking, raise_first
from cosyinstall.probe import BoxFacts, GpuInfo, PythonFound, gather
from cosyinstall.readiness import HUNG, WAITING, Observation, Readiness

from nvidiasmi import A100, RTX4090, T4, install_standin, path_with

A = {"name": "NVIDIA A100-SXM4-40GB", "compute_cap": "8.0", "driver_major": "535"}
B = {"name": "NVIDIA GeForce RTX 4090", "compute_cap": "8.9", "driver_major": "550"}
CONVERT = PrepareStep("convert", ("python", "convert.py"), "w/config.json", ("w",))
BUILD = PrepareStep("build", ("trtllm-build", "--checkpoint_dir", "w"), "e/config.json", ("e",), gpu_keyed=True)


def _done(gpu=A, models="m1"):
    return {"steps": {"convert": step_entry(CONVERT, gpu, models), "build": step_entry(BUILD, gpu, models)}}


def _runs(actions):
    return [a.step.name for a in actions if a.run]


def test_finished_steps_on_the_same_gpu_and_models_are_kept() -> None:
    assert _runs(plan_steps([CONVERT, BUILD], _done(), A, "m1", lambda rel: True)) == []


def test_a_step_without_a_record_is_rerun_and_so_is_every_later_one() -> None:
    record = _done()
    del record["steps"]["convert"]  # killed or failed: never recorded
    actions = plan_steps([CONVERT, BUILD], record, A, "m1", lambda rel: True)
    assert _runs(actions) == ["convert", "build"]
    assert "killed or failed" in actions[0].reason and "convert" in actions[1].reason


def test_a_missing_output_reruns_the_step() -> None:
    actions = plan_steps([CONVERT, BUILD], _done(), A, "m1", lambda rel: rel != "e/config.json")
    assert _runs(actions) == ["build"] and "e/config.json is missing" in actions[1].reason


def test_another_gpu_rebuilds_only_the_gpu_keyed_step_and_names_both_gpus() -> None:
    actions = plan_steps([CONVERT, BUILD], _done(), B, "m1", lambda rel: True)
    assert _runs(actions) == ["build"] and actions[1].gpu_changed
    assert "NVIDIA A100-SXM4-40GB (compute capability 8.0, driver 535)" in actions[1].reason
    assert "NVIDIA GeForce RTX 4090 (compute capability 8.9, driver 550)" in actions[1].reason


def test_new_models_or_rebuild_rerun_everything() -> None:
    assert _runs(plan_steps([CONVERT, BUILD], _done(), A, "m2", lambda rel: True)) == ["convert", "build"]
    assert _runs(plan_steps([CONVERT, BUILD], _done(), A, "m1", lambda rel: True, rebuild=True)) == ["convert", "build"]


def test_build_outputs_go_after_an_unfinished_first_start_or_on_another_gpu() -> None:
    assert outputs_verdict({"server": {"gpu": A, "first-start": True}}, A, True).startswith("the previous first start")
    assert "this box has NVIDIA GeForce RTX 4090" in outputs_verdict({"server": {"gpu": A}}, B, True)
    assert outputs_verdict({"server": {"gpu": A}}, A, True) == ""
    assert outputs_verdict({}, B, True) == ""


def test_the_server_spec_carries_prepare_probe_and_outputs_and_reads_old_manifests() -> None:
    raw = {"command": ["python", "s.py"], "build-outputs": ["m/x.plan"],
           "prepare": [{"name": "b", "command": ["make"], "creates": "m/e", "clean": ["m/e"], "gpu-keyed": True}],
           "probe": {"path": "/tts", "form": {"text": "hi"}, "files": {"wav": "asset/a.wav"}, "min-bytes": 10}}
    spec = ServerSpec.from_dict(raw)
    assert ServerSpec.from_dict(spec.to_dict()) == spec
    assert spec.prepare[0].gpu_keyed and spec.probe is not None and spec.probe.files == (("wav", "asset/a.wav"),)
    old = ServerSpec.from_dict({"command": ["python", "s.py"]})
    assert old.prepare == () and old.probe is None and "prepare" not in old.to_dict()
    for bad in ("/etc", "../up", "m/../../x"):
        with pytest.raises(ArtifactRejected):
            ServerSpec.from_dict(dict(raw, **{"build-outputs": [bad]}))


def _facts(gpu, shm=None) -> BoxFacts:
    return BoxFacts("x86_64", (2, 35), [PythonFound("/usr/bin/python3.10", (3, 10, 12), "CPython")], None, [],
                    100 << 30, "/root", True, gpu.driver if gpu else None, gpu.name if gpu else None,
                    gpu=gpu, shm_bytes=shm)


TARGET = {"python": "3.10", "platform": "x86_64-manylinux_2_28",
          "gpu": {"min-compute-capability": "8.0", "min-driver": "525.60.13", "min-memory-gb": 16}}


def test_gpu_below_the_requirement_blocks_with_exit_4() -> None:
    t4 = GpuInfo("Tesla T4", "7.5", "535.104.05", 15360)
    findings = evaluate(_facts(t4), TARGET, 0, need_python=False, cuda=12)
    bad = first_blocking(findings)
    assert bad is not None and bad.check == "gpu need"
    assert "compute capability 7.5 is below 8.0" in bad.detail and "less than 16 GB" in bad.detail
    with pytest.raises(EnvironmentUnsuitable) as err:
        raise_first(findings)
    assert err.value.exit_code == 4


def test_a_good_gpu_passes_and_no_gpu_only_warns() -> None:
    a100 = GpuInfo("NVIDIA A100", "8.0", "535.104.05", 40960)
    assert first_blocking(evaluate(_facts(a100), TARGET, 0, need_python=False)) is None
    findings = evaluate(_facts(None), TARGET, 0, need_python=False)
    row = next(f for f in findings if f.check == "gpu need")
    assert row.status == "warn" and first_blocking(findings) is None


def test_shm_row_only_under_mpirun_and_warns_below_1_gb() -> None:
    a100 = GpuInfo("NVIDIA A100", "8.0", "535.104.05", 40960)
    assert not [f for f in evaluate(_facts(a100, 64 << 20), TARGET, 0, need_python=False) if f.check == "shm"]
    row = next(f for f in evaluate(_facts(a100, 64 << 20), TARGET, 0, need_python=False, launcher="mpirun")
               if f.check == "shm")
    assert row.status == "warn" and "1 GB" in row.detail
    ok = next(f for f in evaluate(_facts(a100, 2 << 30), TARGET, 0, need_python=False, launcher="mpirun")
              if f.check == "shm")
    assert ok.ok


def test_gpu_facts_come_from_the_nvidia_smi_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = install_standin(tmp_path / "standin", T4)
    monkeypatch.setenv("PATH", path_with(folder))
    facts = gather(str(tmp_path), "3.10", want_python=False)
    assert facts.gpu == GpuInfo("Tesla T4", "7.5", "535.104.05", 15360)
    assert facts.gpu.identity() == {"name": "Tesla T4", "compute_cap": "7.5", "driver_major": "535"}
    assert A100 and RTX4090  # the other rows are used by the start tests


def test_target_gpu_is_validated_with_the_manifest() -> None:
    with pytest.raises(ArtifactRejected):
        GpuRequirement.from_target({"gpu": {"min-compute-capability": "eight"}})
    with pytest.raises(ArtifactRejected):
        ArtifactManifest.from_dict({"format": "cosy-offline/1", "kind": "models", "name": "n", "files": [],
                                    "target": {"gpu": {"min-memory-gb": -1}}})


def _checker() -> Readiness:
    return Readiness(start=0.0, port=1, ready_log="READY", silence_timeout=10.0)


def test_a_silent_server_that_burns_cpu_is_not_hung() -> None:
    checker = _checker()
    for t in range(0, 40, 2):
        verdict = checker.observe(Observation(now=float(t), cpu_ticks=100 * t))
        assert verdict.outcome == WAITING


def test_a_silent_idle_server_is_hung() -> None:
    checker = _checker()
    outcome = [checker.observe(Observation(now=float(t), cpu_ticks=50)).outcome for t in range(0, 14, 2)]
    assert outcome[-1] == HUNG and "used no CPU time" in checker.verdict.message
