"""Judge the box against the target: pure functions over BoxFacts, rendered as a table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from cosyinstall.errors import EnvironmentUnsuitable
from cosyinstall.probe import BoxFacts, PythonFound
from cosyinstall.progress import human_bytes

__all__ = ["Finding", "parse_platform", "evaluate", "choose_python", "first_blocking", "render", "MARGIN"]

# Extraction and the venv write more than the zips hold (installed wheels are unpacked).
MARGIN = 1.15
MARGIN_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    blocking: bool = True
    hint: str = ""

    @property
    def status(self) -> str:
        if self.ok:
            return "ok"
        return "FAIL" if self.blocking else "warn"


def parse_platform(tag: str) -> Tuple[str, Optional[Tuple[int, int]]]:
    """'x86_64-manylinux_2_28' -> ('x86_64', (2, 28)); other uv platforms give no glibc floor."""
    match = re.match(r"^([a-z0-9_]+)-manylinux_(\d+)_(\d+)$", tag)
    if match:
        return match.group(1), (int(match.group(2)), int(match.group(3)))
    machine = tag.split("-")[0] if "-" in tag else ("x86_64" if tag in ("linux",) else tag)
    return machine, None


def choose_python(facts: BoxFacts, minor: str) -> Optional[PythonFound]:
    for found in facts.pythons:
        if found.minor == minor and found.implementation == "CPython":
            return found
    return None


def evaluate(facts: BoxFacts, target: Mapping[str, Any], need_bytes: int) -> List[Finding]:
    findings: List[Finding] = []
    minor = str(target.get("python", ""))
    chosen = choose_python(facts, minor)
    if chosen is not None:
        findings.append(Finding("python", True, "CPython %s at %s" % (".".join(map(str, chosen.version)), chosen.path)))
    elif facts.python_asked:
        got = facts.pythons[0] if facts.pythons else None
        what = "does not run" if got is None else "is %s %s" % (got.implementation, got.minor)
        findings.append(Finding(
            "python", False, "--python %s %s, but the target needs CPython %s" % (facts.python_asked, what, minor),
            hint="pass --python with a CPython %s interpreter" % minor,
        ))
    else:
        seen = ", ".join("%s %s" % (p.path, p.minor) for p in facts.pythons) or "none that run"
        findings.append(Finding(
            "python", False, "no CPython %s found on this box (found: %s)" % (minor, seen),
            hint="install CPython %s (for example with conda) and pass it with --python" % minor,
        ))
    machine, glibc_floor = parse_platform(str(target.get("platform", "")))
    if machine and machine != facts.machine:
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
    need = int(need_bytes * MARGIN) + MARGIN_BYTES
    if facts.free_bytes is None:
        findings.append(Finding("disk", False, "cannot read free space of %s" % facts.space_path, blocking=False))
    elif facts.free_bytes < need:
        findings.append(Finding(
            "disk", False, "%s free on %s but about %s is needed" % (human_bytes(facts.free_bytes), facts.space_path, human_bytes(need)),
            hint="free some space or choose another --to",
        ))
    else:
        findings.append(Finding("disk", True, "%s free on %s, need about %s" % (human_bytes(facts.free_bytes), facts.space_path, human_bytes(need))))
    if facts.writable:
        findings.append(Finding("write", True, "can write %s" % facts.space_path))
    else:
        findings.append(Finding("write", False, "no write permission on %s" % facts.space_path, hint="run as the owner or as root"))
    if facts.gpu_driver:
        findings.append(Finding("gpu", True, "%s, driver %s" % (facts.gpu_name or "GPU", facts.gpu_driver), blocking=False))
    else:
        findings.append(Finding("gpu", False, "nvidia-smi not found or reports no GPU", blocking=False))
    return findings


def first_blocking(findings: List[Finding]) -> Optional[Finding]:
    for finding in findings:
        if not finding.ok and finding.blocking:
            return finding
    return None


def raise_first(findings: List[Finding]) -> None:
    bad = first_blocking(findings)
    if bad is not None:
        raise EnvironmentUnsuitable(bad.detail, bad.hint)


def render(findings: List[Finding]) -> str:
    width = max(len(f.check) for f in findings) if findings else 5
    return "\n".join("  %-4s  %-*s  %s" % (f.status, width, f.check, f.detail) for f in findings)
