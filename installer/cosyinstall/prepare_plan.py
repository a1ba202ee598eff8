"""Which prepare steps to clean and rerun, and whether the app's own build outputs must go (pure).

Given the recorded state (prepare.json's content), the GPU identity of this box and the digest
of the installed models, decide; no disk is touched here, so the generations code can ask the
same question of another tree's record.

The record:

    {"steps": {NAME: {"command": [...], "models": DIGEST, "gpu": IDENTITY or null}},
     "server": {"gpu": IDENTITY or null, "first-start": true while a first start is under way}}

An IDENTITY is {"name", "compute_cap", "driver_major"}: what a TensorRT engine is valid for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from cosyinstall.artifact import PrepareStep

__all__ = ["StepAction", "plan_steps", "step_entry", "outputs_verdict", "describe_gpu", "gpu_changed"]

GpuId = Optional[Mapping[str, str]]


@dataclass(frozen=True)
class StepAction:
    """What to do with one step: run it (after cleaning) or keep it; `reason` says why, for the user."""

    step: PrepareStep
    run: bool
    reason: str = ""
    gpu_changed: bool = False


def describe_gpu(gpu: GpuId) -> str:
    if not gpu:
        return "no GPU"
    return "%s (compute capability %s, driver %s)" % (
        gpu.get("name") or "GPU", gpu.get("compute_cap") or "?", gpu.get("driver_major") or "?")


def gpu_changed(before: GpuId, now: GpuId) -> bool:
    return dict(before or {}) != dict(now or {})


def step_entry(step: PrepareStep, gpu: GpuId, models: str) -> Dict[str, Any]:
    """The record of a finished step: what its output depends on."""
    return {"command": list(step.command), "models": models, "gpu": dict(gpu) if step.gpu_keyed and gpu else None}


def plan_steps(
    steps: Sequence[PrepareStep],
    record: Mapping[str, Any],
    gpu: GpuId,
    models: str,
    exists: Callable[[str], bool],
    rebuild: bool = False,
) -> List[StepAction]:
    """One action per step, in order. A step reruns when forced, never finished (killed or failed),
    its output is missing, its command or the models changed, or (gpu-keyed) the GPU changed; every
    step after a rerun one reruns too, since it is built from what the earlier one makes."""
    done = record.get("steps") if isinstance(record.get("steps"), Mapping) else {}
    actions: List[StepAction] = []
    upstream = ""
    for step in steps:
        entry = done.get(step.name) if isinstance(done, Mapping) else None
        reason = ""
        moved = False
        if rebuild:
            reason = "--rebuild asked for it"
        elif upstream:
            reason = "it is built from %s, which runs again" % upstream
        elif not isinstance(entry, Mapping):
            reason = "it has not finished before (never run, killed or failed)"
        elif not exists(step.creates):
            reason = "%s is missing" % step.creates
        elif entry.get("command") != list(step.command):
            reason = "its command changed"
        elif entry.get("models") != models:
            reason = "the installed models changed"
        elif step.gpu_keyed and gpu_changed(entry.get("gpu"), gpu):
            reason = "it was built on %s and this box has %s" % (describe_gpu(entry.get("gpu")), describe_gpu(gpu))
            moved = True
        if reason:
            upstream = upstream or step.name
        actions.append(StepAction(step, bool(reason), reason, moved))
    return actions


def outputs_verdict(record: Mapping[str, Any], gpu: GpuId, has_outputs: bool) -> str:
    """Why the app's own build outputs must be removed before this start, or "" to keep them."""
    if not has_outputs:
        return ""
    server = record.get("server") if isinstance(record.get("server"), Mapping) else None
    if not server:
        return ""
    if server.get("first-start"):
        return "the previous first start ended before the server was ready, so they may be half-written"
    if "gpu" in server and gpu_changed(server.get("gpu"), gpu):
        return "they were built on %s and this box has %s" % (describe_gpu(server.get("gpu")), describe_gpu(gpu))
    return ""
