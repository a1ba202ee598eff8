"""The virtual environment: created by the bundled uv from the target CPython, filled offline.

uv runs with a scrubbed environment (no index, config or proxy settings from the shell) and
with its cache on the same disk as --to, because the system disk of a rented box is small.
"""

from __future__ import annotations

import os
import subprocess
from typing import Dict, List, Mapping, Optional

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.progress import NullReporter, Reporter

__all__ = ["uv_env", "create_venv", "install_requirements", "venv_python"]


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


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


def _run(argv: List[str], env: Dict[str, str], what: str, reporter: Reporter) -> None:
    reporter.info("%s: %s" % (what, " ".join(argv)))
    try:
        proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise EnvironmentUnsuitable("cannot run %s (%s)" % (argv[0], exc.strerror or exc))
    output = proc.stdout.decode("utf-8", "replace").strip()
    if output and reporter.log is not None:
        reporter.log.write(output + "\n")
        reporter.log.flush()
    if proc.returncode != 0:
        last = [line for line in output.splitlines() if line.strip()][-3:]
        detail = " / ".join(line.strip() for line in last) or "no output"
        if "No space left" in output:
            raise EnvironmentUnsuitable("the disk filled up during %s" % what, "free some space and run apply again")
        raise ArtifactRejected("%s failed (uv exit %d): %s" % (what, proc.returncode, detail),
                               "see .cosyinstall/install.log for uv's full output")


def create_venv(uv: str, python: str, venv: str, cache_dir: str, reporter: Optional[Reporter] = None) -> None:
    reporter = reporter or NullReporter()
    _run([uv, "venv", "--quiet", "--python", python, venv], uv_env(cache_dir), "creating the venv", reporter)


def install_requirements(
    uv: str, venv: str, wheels: str, requirements: str, cache_dir: str, reporter: Optional[Reporter] = None
) -> None:
    reporter = reporter or NullReporter()
    argv = [
        uv, "pip", "install", "--python", venv_python(venv), "--no-index", "--require-hashes",
        "--find-links", wheels, "--requirement", requirements, "--no-build",
    ]
    _run(argv, uv_env(cache_dir), "installing packages", reporter)
