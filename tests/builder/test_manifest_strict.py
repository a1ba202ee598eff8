"""Issue 14, point 1-2 on the builder: strict manifest keys, local folders checked at lock time,
pack all-or-nothing, an explicit manifest, manifests found after a non-editable install."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cosybuild.pack as packmod
from cosybuild.cache import Cache
from cosybuild.manifestkeys import ALLOWED, ARRAY_TABLES
from cosybuild.pack import pack
from cosybuild.profile import load_profile
from cosyinstall.errors import UsageError
from cosyinstall.progress import NullReporter
from support import REPO, cosybuild, one_sentence, run, tree_snapshot

# A manifest using every table ALLOWED knows, so each can receive a typo.
FULL: dict[str, Any] = {
    "name": "t",
    "target": {"python": "3.10", "platform": "x86_64-manylinux_2_28",
               "gpu": {"min-compute-capability": "8.0"}},
    "packages": {"requirements": ["six==1.16.0"]},
    "app": {"path": "app"},
    "models": [{"name": "m", "source": "local", "repo": "weights"}],
    "server": {"command": ["python", "server.py", "--port", "{port}"], "port": 6008, "ready-log": "ready",
               "probe": {"path": "/"}, "prepare": [{"name": "build", "command": ["true"], "creates": "x"}]},
}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[%s]" % ", ".join(_value(x) for x in v)
    return '"%s"' % str(v).replace("\\", "\\\\").replace('"', '\\"')


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough of a TOML writer for manifests: scalars, lists, tables, arrays of tables."""
    lines = ["%s = %s" % (k, _value(v)) for k, v in data.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))]
    out = "\n".join(lines) + "\n"
    for k, v in data.items():
        name = prefix + k
        if isinstance(v, dict):
            out += "\n[%s]\n" % name + to_toml(v, name + ".")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for entry in v:
                out += "\n[[%s]]\n" % name + to_toml(entry, name + ".")
    return out


def project(tmp_path: Path, data: dict[str, Any] = FULL) -> Path:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "server.py").write_text("print('ready')\n")
    (tmp_path / "weights").mkdir(exist_ok=True)
    (tmp_path / "weights" / "w.bin").write_bytes(b"weights")
    path = tmp_path / "t.toml"
    path.write_text(to_toml(data), encoding="utf-8")
    return path


def test_the_full_manifest_loads(tmp_path: Path) -> None:
    assert load_profile(str(project(tmp_path))).name == "t"


def _table(data: dict[str, Any], table: str) -> dict[str, Any]:
    node: Any = data
    for part in [p for p in table.split(".") if p]:
        node = node[part]
        if isinstance(node, list):
            node = node[0]
    return node


@pytest.mark.parametrize("table", sorted(ALLOWED))
def test_every_table_rejects_an_unknown_key_and_names_the_nearest(tmp_path: Path, table: str) -> None:
    data = copy.deepcopy(FULL)
    meant = next(k for k in ALLOWED[table] if k not in ALLOWED)  # a scalar key of this table
    typo = meant.replace("-", "_") + "s" if "-" in meant else meant + "x"
    _table(data, table)[typo] = "x"
    path = project(tmp_path, data)
    with pytest.raises(UsageError) as err:
        load_profile(str(path))
    text = str(err.value)
    assert err.value.exit_code == 2
    assert str(path) in text and "unknown key %s" % typo in text and "nearest valid key is %s" % meant in text
    if table in ARRAY_TABLES:
        assert "[[%s]] #1" % table in text


@pytest.mark.parametrize("typo, meant", [("requirement", "requirements"), ("ready_log", "ready-log"), ("pth", "path")])
def test_the_issues_typos_exit_2_on_the_command_line(tmp_path: Path, typo: str, meant: str) -> None:
    data = copy.deepcopy(FULL)
    table = {"requirement": "packages", "ready_log": "server", "pth": "app"}[typo]
    data[table][typo] = data[table].pop(meant) if meant in data[table] else "x"
    if table == "app":
        data["app"]["path"] = "app"
    proc = cosybuild("lock", str(project(tmp_path, data)))
    assert proc.returncode == 2, proc.stderr
    line = one_sentence(proc.stderr)
    assert "unknown key %s" % typo in line and meant in line


def test_a_top_level_unknown_table_is_refused(tmp_path: Path) -> None:
    data = copy.deepcopy(FULL)
    data["extra"] = {"a": "b"}
    with pytest.raises(UsageError, match="the top level has an unknown key extra"):
        load_profile(str(project(tmp_path, data)))


@pytest.mark.parametrize("what", ["app", "model"])
def test_lock_names_a_missing_local_folder_at_once(tmp_path: Path, what: str) -> None:
    data = copy.deepcopy(FULL)
    if what == "app":
        data["app"]["path"] = "no-app"
    else:
        data["models"][0]["repo"] = "no-weights"
    path = project(tmp_path, data)
    proc = cosybuild("lock", str(path))
    assert proc.returncode == 2, proc.stderr
    line = one_sentence(proc.stderr)
    assert str(tmp_path / ("no-app" if what == "app" else "no-weights")) in line and "does not exist" in line
    assert not (tmp_path / "t.lock.json").exists()


def test_a_pack_that_fails_late_leaves_out_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = project(tmp_path)
    out = tmp_path / "dist"
    cache = Cache(tmp_path / "cache")
    pack(load_profile(str(path)), out, NullReporter(), only="models", cache=cache)
    before = tree_snapshot(out)
    (tmp_path / "weights" / "w.bin").write_bytes(b"new weights")

    def broken_pyz(_path: Path) -> Path:  # stands in for any failure after the zips are written
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packmod, "build_pyz", broken_pyz)
    with pytest.raises(OSError):
        pack(load_profile(str(path)), out, NullReporter(), only="models", cache=cache)
    assert tree_snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_failed_first_pack_leaves_no_out_folder(tmp_path: Path) -> None:
    data = copy.deepcopy(FULL)
    data["models"][0]["unzip"] = ["absent.zip"]
    path = project(tmp_path, data)
    proc = cosybuild("pack", str(path), "--only", "models", "--out", str(tmp_path / "dist"))
    assert proc.returncode == 2, proc.stderr
    assert "absent.zip" in one_sentence(proc.stderr)
    assert not (tmp_path / "dist").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("command", ["lock", "pack"])
def test_lock_and_pack_need_an_explicit_manifest(command: str) -> None:
    proc = cosybuild(command)
    assert proc.returncode == 2
    assert "MANIFEST" in proc.stderr


def test_verify_without_a_bundle_names_an_option_that_exists(tmp_path: Path) -> None:
    proc = cosybuild("verify", str(tmp_path))
    assert proc.returncode == 2
    line = one_sentence(proc.stderr)
    assert "holds no SHA256SUMS" in line and "cosybuild pack --out" in line


def _installed_copy(tmp_path: Path) -> Path:
    """cosy-offline installed for real (a built wheel, not editable) into a folder of its own."""
    target = tmp_path / "site"
    src = tmp_path / "src"  # a copy, so the build writes nothing into the repository
    for part in ("builder", "installer"):
        shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, src / part)
    uv = shutil.which("uv")
    assert uv, "uv comes with the test venv"
    proc = run([uv, "pip", "install", "--no-deps", "--python", sys.executable, "--target", str(target), str(src)],
               timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert not list(target.glob("__editable__*")) and (target / "cosybuild" / "cli.py").is_file()
    return target


def _installed_cosybuild(site: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = ("import sys; sys.path.insert(0, %r); import cosybuild.cli as c; "
            "assert c.__file__.startswith(%r), c.__file__; sys.argv[0] = 'cosybuild'; c.main()") % (str(site), str(site))
    return run([sys.executable, "-c", code, *args], cwd=cwd, env=env)


def test_manifests_are_found_after_a_non_editable_install(tmp_path: Path) -> None:
    site = _installed_copy(tmp_path)
    work = tmp_path / "work"
    (work / "manifests").mkdir(parents=True)
    data = copy.deepcopy(FULL)
    data["app"]["path"] = "../no-app"
    (work / "manifests" / "mine.toml").write_text(to_toml(data), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSYBUILD_MANIFESTS")}
    # From the folder holding manifests/: the manifest is found (and then refused for its app folder).
    proc = _installed_cosybuild(site, work, "lock", "mine", env=env)
    assert proc.returncode == 2 and "the app folder" in one_sentence(proc.stderr), proc.stderr
    # From anywhere, through the environment variable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _installed_cosybuild(site, elsewhere, "lock", "mine", env=dict(env, COSYBUILD_MANIFESTS=str(work / "manifests")))
    assert proc.returncode == 2 and "the app folder" in one_sentence(proc.stderr), proc.stderr
    # Neither: the sentence says what to do, instead of "choose one of: ."
    proc = _installed_cosybuild(site, elsewhere, "lock", "mine", env=env)
    assert proc.returncode == 2
    line = one_sentence(proc.stderr)
    assert "COSYBUILD_MANIFESTS" in line and "choose one of: ." not in line
