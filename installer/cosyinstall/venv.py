"""The virtual environment: created by the bundled uv from the target CPython, filled offline.

uv runs with a scrubbed environment (no index, config or proxy settings from the shell) and
with its cache on the same disk as --to, because the system disk of a rented box is small.
"""

from __future__ import annotations

import glob
import os
import subprocess
from typing import Dict, List, Mapping, Optional, Sequence

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.extract import disk_full
from cosyinstall.plan import canonical_name
from cosyinstall.progress import NullReporter, Reporter

__all__ = [
    "Uv",
    "uv_env",
    "create_venv",
    "install_requirements",
    "venv_python",
    "venv_version",
    "installed_dists",
]


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def venv_version(venv: str) -> Optional[str]:
    """'3.10.13' from pyvenv.cfg, or None if the venv is missing or unreadable."""
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition("=")
                if key.strip() in ("version_info", "version"):
                    return value.strip()
    except OSError:
        return None
    return None


def installed_dists(venv: str) -> Dict[str, str]:
    """canonical name -> version of every distribution in the venv's site-packages."""
    found: Dict[str, str] = {}
    for info in glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "*.dist-info")):
        base = os.path.basename(info)[: -len(".dist-info")]
        name, _, version = base.rpartition("-")
        found[canonical_name(name)] = version
    return found


def uv_env(cache_dir: str, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    base = dict(os.environ if environ is None else environ)
    env = {
        k: v for k, v in base.items()
        if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME"))
    }
    env.update({
        "UV_CACHE_DIR": cache_dir,
        "UV_NO_CONFIG": "1",
        "UV_OFFLINE": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    })
    return env


class Uv:
    """One uv binary, its cache directory, and file descriptors its runs must inherit."""

    def __init__(self, exe: str, cache_dir: str, reporter: Optional[Reporter] = None,
                 keep_fds: Sequence[int] = ()) -> None:
        self.exe = exe
        self.cache_dir = cache_dir
        self.reporter = reporter or NullReporter()
        self.keep_fds = tuple(keep_fds)

    def run(self, args: List[str], what: str) -> None:
        argv = [self.exe] + args
        reporter = self.reporter
        reporter.info("%s: %s" % (what, " ".join(argv)))
        try:
            proc = subprocess.run(argv, env=uv_env(self.cache_dir), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, pass_fds=self.keep_fds)
        except OSError as exc:
            raise EnvironmentUnsuitable("cannot run %s (%s)" % (self.exe, exc.strerror or exc),
                                        "the bundle's uv is built for linux x86_64")
        output = proc.stdout.decode("utf-8", "replace").strip()
        if output and reporter.log is not None:
            reporter.log.write(output + "\n")
            reporter.log.flush()
        if proc.returncode != 0:
            last = [line for line in output.splitlines() if line.strip()][-3:]
            detail = " / ".join(line.strip() for line in last) or "no output"
            if "No space left" in output or "Disk quota exceeded" in output:
                raise disk_full(self.cache, during=what)
            raise ArtifactRejected("%s failed (uv exit %d): %s" % (what, proc.returncode, detail),
                                   "see .cosyinstall/install.log for uv's full output")

    def create_venv(self, python: str, venv: str) -> None:
        self.run(["venv", "--quiet", "--python", python, venv], "creating the venv")

    def install(self, venv: str, wheels: str, requirements: Optional[str], files: Sequence[str] = (),
                require_hashes: bool = True) -> None:
        """Install offline from the wheels folder: a requirements file, or the given wheel files."""
        args = ["pip", "install", "--python", venv_python(venv), "--no-index", "--find-links", wheels, "--no-build"]
        if require_hashes:
            args.append("--require-hashes")
        if requirements is not None:
            args += ["--requirement", requirements]
        args += list(files)
        self.run(args, "installing packages")

    def uninstall(self, venv: str, names: Sequence[str]) -> None:
        if names:
            self.run(["pip", "uninstall", "--python", venv_python(venv)] + list(names), "removing packages")


def create_venv(uv: str, python: str, venv: str, cache_dir: str, reporter: Optional[Reporter] = None) -> None:
    Uv(uv, cache_dir, reporter).create_venv(python, venv)


def install_requirements(
    uv: str, venv: str, wheels: str, requirements: str, cache_dir: str, reporter: Optional[Reporter] = None
) -> None:
    Uv(uv, cache_dir, reporter).install(venv, wheels, requirements)
