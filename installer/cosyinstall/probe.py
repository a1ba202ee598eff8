"""Gather facts about the box (Pythons, machine, glibc, disk, permissions, GPU driver).

Only I/O lives here; judging the facts is preflight.py's job.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ["PythonFound", "GpuInfo", "BoxFacts", "gather", "probe_python", "python_candidates", "nearest_existing",
           "query_gpu", "shm_bytes"]

_PROBE = "import sys,platform;print('%d.%d.%d' % sys.version_info[:3]);print(platform.python_implementation())"


@dataclass(frozen=True)
class PythonFound:
    path: str
    version: Tuple[int, ...]
    implementation: str

    @property
    def minor(self) -> str:
        return "%d.%d" % self.version[:2]


@dataclass(frozen=True)
class GpuInfo:
    """The first GPU nvidia-smi lists (CUDA device 0, the one the server uses)."""

    name: str
    compute_cap: str        # "8.6"; "" when the driver is too old to report it
    driver: str             # "535.104.05"
    memory_mib: Optional[int]

    @property
    def driver_major(self) -> str:
        return self.driver.split(".")[0]

    def identity(self) -> Dict[str, str]:
        """What a built engine depends on: the card, its architecture and the driver's major release."""
        return {"name": self.name, "compute_cap": self.compute_cap, "driver_major": self.driver_major}


@dataclass
class BoxFacts:
    machine: str
    glibc: Optional[Tuple[int, int]]
    pythons: List[PythonFound]
    python_asked: Optional[str]
    python_failures: List[str]
    free_bytes: Optional[int]
    space_path: str
    writable: bool
    gpu_driver: Optional[str] = None
    gpu_name: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    to_is_file: bool = False
    gpu: Optional[GpuInfo] = None
    shm_bytes: Optional[int] = None


def probe_python(path: str, timeout: float = 15.0) -> Optional[PythonFound]:
    """Run a candidate interpreter; None if it does not run (pyenv shims often do not)."""
    try:
        out = subprocess.run(
            [path, "-I", "-c", _PROBE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            timeout=timeout, check=True, universal_newlines=True,
        ).stdout.split()
        version = tuple(int(x) for x in out[0].split("."))
        return PythonFound(os.path.realpath(path), version, out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def python_candidates(minor: Optional[str]) -> List[str]:
    """Places a CPython of the wanted minor version is commonly found on GPU-cloud images."""
    exe = "python" + minor if minor else "python3"
    names = [exe, "python3", "python"]
    found: List[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                found.append(path)
    found.append(sys.executable)
    home = os.path.expanduser("~")
    roots = [os.environ.get("PYENV_ROOT", os.path.join(home, ".pyenv"))]
    patterns = [os.path.join(r, "versions", (minor or "3.") + "*", "bin", exe) for r in roots]
    for conda in (os.path.join(home, "miniconda3"), os.path.join(home, "anaconda3"), "/opt/conda", "/root/miniconda3"):
        patterns.append(os.path.join(conda, "bin", exe))
        patterns.append(os.path.join(conda, "envs", "*", "bin", exe))
    patterns += ["/usr/bin/" + exe, "/usr/local/bin/" + exe]
    for pattern in patterns:
        found.extend(sorted(glob.glob(pattern)))
    unique: List[str] = []
    for path in found:
        if path and path not in unique:
            unique.append(path)
    return unique


def _glibc() -> Optional[Tuple[int, int]]:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        return None
    parts = text.split()
    if len(parts) == 2 and parts[0] == "glibc":
        try:
            major, minor = parts[1].split(".")[:2]
            return int(major), int(minor)
        except ValueError:
            return None
    return None


def nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


_GPU_FIELDS = "name,compute_cap,driver_version,memory.total"


def _smi(exe: str, fields: str) -> Optional[List[str]]:
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=" + fields, "--format=csv,noheader,nounits"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20, universal_newlines=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        # "NVIDIA-SMI has failed because it couldn't communicate with the driver" and the like.
        return None
    return [part.strip() for part in lines[0].split(",")]


def query_gpu() -> Optional[GpuInfo]:
    """GPU 0 as nvidia-smi's query mode reports it, or None when there is no working GPU."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    row = _smi(exe, _GPU_FIELDS)
    if row is None or len(row) < 4:
        # Drivers before 510 do not know compute_cap: ask again without it.
        old = _smi(exe, "name,driver_version,memory.total")
        if old is None or len(old) < 3:
            return None
        row = [old[0], "", old[1], old[2]]
    name, cap, driver, memory = row[:4]
    if not driver[:1].isdigit():
        return None
    try:
        memory_mib: Optional[int] = int(float(memory))
    except ValueError:
        memory_mib = None
    return GpuInfo(name, cap if cap[:1].isdigit() else "", driver, memory_mib)


def shm_bytes(path: str = "/dev/shm") -> Optional[int]:
    """The size of /dev/shm (MPI and NCCL pass data through it), or None when there is none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_blocks * st.f_frsize


def gather(to: str, minor: Optional[str], python: Optional[str] = None, want_python: bool = True) -> BoxFacts:
    """Facts for preflight; Pythons are probed only when a venv will be built."""
    pythons: List[PythonFound] = []
    failures: List[str] = []
    candidates = ([python] if python else python_candidates(minor)) if want_python else []
    seen = set()
    for cand in candidates:
        got = probe_python(cand)
        if got is None:
            failures.append(cand)
            continue
        if got.path in seen:
            continue
        seen.add(got.path)
        pythons.append(got)
        if not python and got.implementation == "CPython" and (got.minor == minor or (not minor and got.version >= (3, 8))):
            break
    space_path = nearest_existing(to)
    try:
        free: Optional[int] = shutil.disk_usage(space_path).free
    except OSError:
        free = None
    to_is_file = os.path.lexists(to) and not os.path.isdir(to)
    writable = os.path.isdir(space_path) and os.access(space_path, os.W_OK)
    gpu = query_gpu()
    return BoxFacts(platform.machine(), _glibc(), pythons, python if want_python else None, failures, free,
                    space_path, writable, gpu.driver if gpu else None, gpu.name if gpu else None,
                    to_is_file=to_is_file, gpu=gpu, shm_bytes=shm_bytes())
