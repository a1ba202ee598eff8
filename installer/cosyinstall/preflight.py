"""Judge the box against the target: pure functions over BoxFacts, rendered as a table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from cosyinstall.artifact import GpuRequirement
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.probe import BoxFacts, PythonFound
from cosyinstall.progress import human_bytes

__all__ = [
    "Finding",
    "parse_platform",
    "evaluate",
    "choose_python",
    "cuda_major",
    "parse_version",
    "MIN_DRIVER",
    "first_blocking",
    "raise_first",
    "render",
    "MARGIN",
    "MARGIN_BYTES",
    "need_with_margin",
    "SHM_ADVISED",
]

# Extraction and the venv write more than the zips hold (installed wheels are unpacked).
MARGIN = 1.15
MARGIN_BYTES = 256 * 1024 * 1024
# Oldest Linux driver that runs each CUDA major release (minor-version compatibility), from
# NVIDIA's CUDA compatibility tables.
MIN_DRIVER: Dict[int, Tuple[int, ...]] = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}
_CUDA_WHEEL = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d+)$")
# TensorRT-LLM's docs ask for a 1 GB /dev/shm for its MPI ranks; containers often give 64 MB.
SHM_ADVISED = 1024 * 1024 * 1024
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class Finding:
    """One row of the preflight table; a failed blocking row stops with its exit code."""

    check: str
    ok: bool
    detail: str
    blocking: bool = True
    hint: str = ""
    code: int = EnvironmentUnsuitable.exit_code

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.blocking else "warn"


def parse_platform(tag: str) -> Tuple[str, Optional[Tuple[int, int]]]:
    """uv's --python-platform -> (machine, glibc floor).

    'x86_64-manylinux_2_28' -> ('x86_64', (2, 28)); 'x86_64-manylinux2014' -> ('x86_64', (2, 17));
    'x86_64-unknown-linux-gnu' and 'linux' give no floor.
    """
    match = re.match(r"^([a-z0-9_]+)-manylinux_(\d+)_(\d+)$", tag)
    if match:
        return match.group(1), (int(match.group(2)), int(match.group(3)))
    match = re.match(r"^([a-z0-9_]+)-(manylinux\w+)$", tag)
    if match and match.group(2) in _LEGACY_MANYLINUX:
        return match.group(1), _LEGACY_MANYLINUX[match.group(2)]
    if tag in ("linux", ""):
        return ("x86_64" if tag else ""), None
    return tag.split("-")[0], None


def choose_python(facts: BoxFacts, minor: Optional[str]) -> Optional[PythonFound]:
    """The interpreter to build the venv from: the target minor, or any CPython 3 if none is known."""
    for found in facts.pythons:
        if found.implementation != "CPython":
            continue
        if (minor and found.minor == minor) or (not minor and found.version[:2] >= (3, 8)):
            return found
    return None


def parse_version(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in text.strip().split("."):
        digits = re.match(r"^\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group(0)))
    return tuple(parts)


def cuda_major(packages: Iterable[Mapping[str, Any]]) -> Optional[int]:
    """The CUDA major release the locked wheels need, from names like nvidia-cuda-runtime-cu12."""
    majors = []
    for pkg in packages:
        match = _CUDA_WHEEL.match(str(pkg.get("name", "")).lower().replace("_", "-"))
        if match:
            majors.append(int(match.group(1)))
    return max(majors) if majors else None


def need_with_margin(need_bytes: int) -> int:
    return int(need_bytes * MARGIN) + MARGIN_BYTES


def _python(facts: BoxFacts, minor: Optional[str], need_python: bool) -> Finding:
    if not need_python:
        return Finding("python", True, "not needed: the venv is already installed")
    wanted = "CPython %s" % minor if minor else "a CPython 3"
    chosen = choose_python(facts, minor)
    skipped = ""
    if facts.python_failures:
        skipped = " (skipped %d that did not run: %s)" % (len(facts.python_failures), ", ".join(facts.python_failures[:3]))
    if chosen is not None:
        return Finding("python", True, "CPython %s at %s%s" % (".".join(map(str, chosen.version)), chosen.path, skipped))
    if facts.python_asked:
        got = facts.pythons[0] if facts.pythons else None
        what = "does not run" if got is None else "is %s %s" % (got.implementation, got.minor)
        return Finding("python", False, "--python %s %s, but the bundle needs %s" % (facts.python_asked, what, wanted),
                       hint="pass --python with a %s interpreter" % wanted)
    seen = ", ".join("%s %s" % (p.path, p.minor) for p in facts.pythons) or "none that run"
    return Finding("python", False, "no %s found on this box (found: %s)%s" % (wanted, seen, skipped),
                   hint="install %s (for example with conda) and pass it with --python" % wanted)


def _gpu(facts: BoxFacts, cuda: Optional[int]) -> Finding:
    if not facts.gpu_driver:
        note = "; the CUDA %d wheels need a driver" % cuda if cuda else ""
        return Finding("gpu", False, "nvidia-smi not found or reports no GPU%s" % note, blocking=False)
    text = "%s, driver %s" % (facts.gpu_name or "GPU", facts.gpu_driver)
    floor = MIN_DRIVER.get(cuda) if cuda else None
    if cuda and floor is None:
        return Finding("gpu", False, "%s; the wheels need CUDA %d, whose minimum driver is unknown to this installer"
                       % (text, cuda), blocking=False)
    if cuda and floor is not None and parse_version(facts.gpu_driver) < floor:
        need = ".".join(map(str, floor))
        return Finding("gpu", False, "%s is older than %s, the minimum for the CUDA %d wheels in the lock"
                       % (text, need, cuda), blocking=False,
                       hint="pick an image or instance with a newer NVIDIA driver")
    if cuda:
        text += " (CUDA %d wheels need %s or newer)" % (cuda, ".".join(map(str, floor or ())))
    return Finding("gpu", True, text, blocking=False)


def _gpu_needs(facts: BoxFacts, req: GpuRequirement) -> Finding:
    """`[target.gpu]` against GPU 0: unmet is exit 4; no GPU at all is only a warning (a CPU box may test)."""
    wants = []
    if req.min_compute_capability:
        wants.append("compute capability %s" % req.min_compute_capability)
    if req.min_driver:
        wants.append("driver %s" % req.min_driver)
    if req.min_memory_gb:
        wants.append("%g GB" % req.min_memory_gb)
    need = "needs " + ", ".join(wants) + " or more" if wants else "needs a GPU"
    gpu = facts.gpu
    if gpu is None:
        return Finding("gpu need", False, "no GPU found, but the bundle %s; the server will not start here" % need,
                       blocking=False)
    problems = []
    if req.min_compute_capability:
        if not gpu.compute_cap:
            problems.append("its compute capability is unknown (driver %s is too old to report it)" % gpu.driver)
        elif parse_version(gpu.compute_cap) < parse_version(req.min_compute_capability):
            problems.append("compute capability %s is below %s" % (gpu.compute_cap, req.min_compute_capability))
    if req.min_driver and parse_version(gpu.driver) < parse_version(req.min_driver):
        problems.append("driver %s is older than %s" % (gpu.driver, req.min_driver))
    if req.min_memory_gb and gpu.memory_mib is not None and gpu.memory_mib < req.min_memory_gb * 1000:
        # nvidia-smi's "24 GB" cards report about 24000-24576 MiB, so 1 GB counts as 1000 MiB here.
        problems.append("%d MiB of memory is less than %g GB" % (gpu.memory_mib, req.min_memory_gb))
    have = "%s (compute capability %s, driver %s, %s MiB)" % (
        gpu.name, gpu.compute_cap or "?", gpu.driver, gpu.memory_mib if gpu.memory_mib is not None else "?")
    if problems:
        return Finding("gpu need", False, "%s: %s; the bundle %s" % (have, "; ".join(problems), need),
                       hint="rent an instance whose GPU meets [target.gpu] (bf16 TensorRT engines need Ampere or newer)")
    return Finding("gpu need", True, "%s; the bundle %s" % (have, need))


def _shm(facts: BoxFacts) -> Finding:
    if facts.shm_bytes is None:
        return Finding("shm", False, "no /dev/shm; MPI under mpirun needs shared memory (TensorRT-LLM asks for 1 GB)",
                       blocking=False)
    if facts.shm_bytes < SHM_ADVISED:
        return Finding("shm", False, "/dev/shm is %s; TensorRT-LLM asks for at least 1 GB under mpirun"
                       % human_bytes(facts.shm_bytes), blocking=False,
                       hint="give the container a larger /dev/shm (docker run --shm-size=1g)")
    return Finding("shm", True, "/dev/shm is %s (mpirun)" % human_bytes(facts.shm_bytes))


def evaluate(
    facts: BoxFacts,
    target: Mapping[str, Any],
    need_bytes: int,
    need_python: bool = True,
    cuda: Optional[int] = None,
    launcher: Optional[str] = None,
) -> List[Finding]:
    """Every box check as a table row, in the order a user fixes them."""
    findings: List[Finding] = []
    minor = str(target.get("python") or "") or None
    findings.append(_python(facts, minor, need_python))
    machine, glibc_floor = parse_platform(str(target.get("platform", "")))
    foreign = target.get("foreign-wheels") or []
    if foreign:
        findings.append(Finding("machine", False, "%d wheels are not for Linux, for example %s" % (len(foreign), foreign[0]),
                                hint="download the wheels for linux x86_64 (manylinux)"))
    elif machine and machine != facts.machine:
        findings.append(Finding("machine", False, "the bundle is for %s but this box is %s" % (machine, facts.machine),
                                hint="build the bundle for this machine"))
    else:
        findings.append(Finding("machine", True, facts.machine))
    if glibc_floor is not None:
        if facts.glibc is None:
            findings.append(Finding("glibc", False, "no glibc found, but the wheels need glibc %d.%d" % glibc_floor))
        elif facts.glibc < glibc_floor:
            findings.append(Finding(
                "glibc", False, "glibc %d.%d is older than the %d.%d the wheels need" % (facts.glibc + glibc_floor),
                hint="use a newer image or build for an older manylinux platform",
            ))
        else:
            findings.append(Finding("glibc", True, "%d.%d (need %d.%d)" % (facts.glibc + glibc_floor)))
    need = need_with_margin(need_bytes)
    if facts.free_bytes is None:
        findings.append(Finding("disk", False, "cannot read free space of %s" % facts.space_path, blocking=False))
    elif facts.free_bytes < need:
        findings.append(Finding(
            "disk", False, "%s free on %s but about %s is needed" % (human_bytes(facts.free_bytes), facts.space_path, human_bytes(need)),
            hint="free some space or choose another --to",
        ))
    else:
        findings.append(Finding("disk", True, "%s free on %s, need about %s" % (human_bytes(facts.free_bytes), facts.space_path, human_bytes(need))))
    if facts.to_is_file:
        findings.append(Finding("write", False, "%s is a file, not a directory" % facts.space_path,
                                hint="pass a directory with --to"))
    elif facts.writable:
        findings.append(Finding("write", True, "can write %s" % facts.space_path))
    else:
        findings.append(Finding("write", False, "no write permission on %s" % facts.space_path, hint="run as the owner or as root"))
    findings.append(_gpu(facts, cuda))
    req = GpuRequirement.from_target(target)
    if req is not None:
        findings.append(_gpu_needs(facts, req))
    if launcher == "mpirun":
        findings.append(_shm(facts))
    return findings


def first_blocking(findings: List[Finding]) -> Optional[Finding]:
    for finding in findings:
        if not finding.ok and finding.blocking:
            return finding
    return None


def raise_first(findings: List[Finding]) -> None:
    """Raise the first blocking failure with its exit code: 3 for an artifact, 4 for the box."""
    bad = first_blocking(findings)
    if bad is None:
        return
    if bad.code == ArtifactRejected.exit_code:
        raise ArtifactRejected(bad.detail, bad.hint)
    raise EnvironmentUnsuitable(bad.detail, bad.hint)


def render(findings: List[Finding]) -> str:
    width = max(len(f.check) for f in findings) if findings else 5
    return "\n".join("  %-4s  %-*s  %s" % (f.status, width, f.check, f.detail) for f in findings)
