"""launch_argv / launch_env are pure; find_mpirun is checked against fake files in tmp_path."""

from __future__ import annotations

import os
import stat

import pytest

from cosyinstall.artifact import ServerSpec
from cosyinstall.errors import EnvironmentUnsuitable, UsageError
from cosyinstall.launch import find_mpirun, launch_argv, launch_env
from cosyinstall.tree import InstallTree

TREE = InstallTree("/srv/cosy")
SPEC = ServerSpec(command=("python", "fast_server.py", "--port", "{port}"), launcher="mpirun", port=6008)
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin",
    "HOME": "/root",
    "PYTHONHOME": "/elsewhere",
    "PYTHONPATH": "/elsewhere/lib",
    "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
    "VIRTUAL_ENV": "/old/venv",
}


def test_mpirun_argv_uses_venv_mpirun_and_spec_port() -> None:
    argv, _ = launch_argv(SPEC, TREE, environ=BASE_ENV)
    assert argv == [
        "/srv/cosy/.venv/bin/mpirun",
        "-n",
        "1",
        "--allow-run-as-root",
        "--bind-to",
        "none",
        "python",
        "fast_server.py",
        "--port",
        "6008",
    ]


def test_port_given_at_start_reaches_the_command() -> None:
    argv, _ = launch_argv(SPEC, TREE, port=7001, environ=BASE_ENV)
    assert argv[-2:] == ["--port", "7001"]


def test_direct_launcher_is_the_bare_command() -> None:
    argv, _ = launch_argv(SPEC, TREE, launcher="direct", port=7002, environ=BASE_ENV)
    assert argv == ["python", "fast_server.py", "--port", "7002"]
    direct_spec = ServerSpec(command=("python", "x.py"), launcher="direct")
    assert launch_argv(direct_spec, TREE, environ=BASE_ENV)[0] == ["python", "x.py"]
    # An explicit launcher beats the spec's.
    assert launch_argv(direct_spec, TREE, launcher="mpirun", environ=BASE_ENV)[0][0] == "/srv/cosy/.venv/bin/mpirun"


def test_system_mpirun_replaces_the_venv_one() -> None:
    argv, _ = launch_argv(SPEC, TREE, environ=BASE_ENV, system_mpirun="/usr/bin/mpirun")
    assert argv[0] == "/usr/bin/mpirun"
    assert argv[1:6] == ["-n", "1", "--allow-run-as-root", "--bind-to", "none"]


def test_unknown_launcher_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        launch_argv(SPEC, TREE, launcher="srun", environ=BASE_ENV)
    assert info.value.exit_code == 2
    assert "srun" in str(info.value)


def test_environment_puts_the_venv_first_and_drops_what_breaks_it() -> None:
    original = dict(BASE_ENV)
    _, env = launch_argv(SPEC, TREE, environ=BASE_ENV)
    assert BASE_ENV == original, "the caller's mapping must not be changed"
    assert env["PATH"] == "/srv/cosy/.venv/bin:/usr/local/bin:/usr/bin"
    assert env["VIRTUAL_ENV"] == "/srv/cosy/.venv"
    assert "PYTHONHOME" not in env and "PYTHONPATH" not in env
    assert env["LD_LIBRARY_PATH"] == "/srv/cosy/.venv/lib:/usr/local/cuda/lib64"
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
    assert env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONIOENCODING"] == "utf-8"
    assert env["HOME"] == "/root"


def test_environment_leaves_no_empty_path_entries() -> None:
    # An empty entry would mean the current directory on PATH or on the loader path.
    env = launch_env(TREE, {"PATH": "/usr/bin::/srv/cosy/.venv/bin:"})
    assert env["PATH"] == "/srv/cosy/.venv/bin:/usr/bin"
    assert env["LD_LIBRARY_PATH"] == "/srv/cosy/.venv/lib"


def test_direct_launcher_gets_the_same_environment() -> None:
    _, env_direct = launch_argv(SPEC, TREE, launcher="direct", environ=BASE_ENV)
    _, env_mpi = launch_argv(SPEC, TREE, launcher="mpirun", environ=BASE_ENV)
    assert env_direct == env_mpi


def _fake_exe(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("#!/bin/sh\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def test_find_mpirun_prefers_the_venv(tmp_path) -> None:
    to = str(tmp_path / "to")
    _fake_exe(os.path.join(to, ".venv", "bin", "mpirun"))
    _fake_exe(str(tmp_path / "sys" / "mpirun"))
    assert find_mpirun(InstallTree(to), {"PATH": str(tmp_path / "sys")}) == os.path.join(to, ".venv", "bin", "mpirun")


def test_find_mpirun_falls_back_to_path(tmp_path) -> None:
    to = str(tmp_path / "to")
    os.makedirs(os.path.join(to, ".venv", "bin"))
    _fake_exe(str(tmp_path / "sys" / "mpirun"))
    assert find_mpirun(InstallTree(to), {"PATH": str(tmp_path / "sys")}) == str(tmp_path / "sys" / "mpirun")


def test_no_mpirun_anywhere_is_environment_unsuitable(tmp_path) -> None:
    to = str(tmp_path / "to")
    os.makedirs(os.path.join(to, ".venv", "bin"))
    with pytest.raises(EnvironmentUnsuitable) as info:
        find_mpirun(InstallTree(to), {"PATH": str(tmp_path / "empty")})
    text = str(info.value)
    assert info.value.exit_code == 4
    assert os.path.join(to, ".venv", "bin", "mpirun") in text
    assert "--launcher direct" in text
    assert "\n" not in text and text.endswith(".")
