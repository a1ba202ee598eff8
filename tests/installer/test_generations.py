"""Generations (issue 13) and a refused update that changes nothing (issue 12.6), with the demo.

An update is built aside as a new generation and made current by one symlink rename; the
previous one stays for `rollback`, and apply goes back by itself when the new server fails
readiness. Unchanged model and venv files are hard links shared between generations; the
venv (uv's relocatable venv) works through <to>/.venv, through its real path, and after the
generation it was cloned from is gone.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Dict

from support import STATE_AND_RECORDS, apply_argv, free_port, offline, one_sentence, pyz, run, tree_differences, tree_digest
from test_incremental import _rebuild

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))

from cosyinstall.tree import InstallTree  # noqa: E402


def _gens(dist: Path, to: Path) -> list:
    proc = run(pyz(dist, "generations", "--json", "--to", str(to)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _current(dist: Path, to: Path) -> int:
    return [g["id"] for g in _gens(dist, to) if g["current"]][0]


def _one_model_file(dist: Path, work: Path, drop_config: bool = False) -> None:
    def change(files: Dict[str, Path], manifest) -> dict:
        files["demo-voice/voice.bin"].write_bytes(os.urandom(4096))
        if drop_config:
            del files["demo-voice/config.json"]  # the demo server cannot load the model without it
        return dict(manifest.meta)

    _rebuild(dist, "pretrained_models.zip", work, change)


def test_update_is_a_generation_sharing_unchanged_files_and_rollback_goes_back(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "CosyVoice"
    assert run(apply_argv(dist, to)).returncode == 0
    tree = InstallTree(str(to))
    assert os.path.islink(to) and os.readlink(to) == ".CosyVoice.cosy/gens/1"
    v1 = tree_digest(to)
    _one_model_file(dist, tmp_path / "v2")
    update = run(apply_argv(dist, to))
    assert update.returncode == 0, update.stderr
    assert os.readlink(to) == ".CosyVoice.cosy/gens/2"
    g1, g2 = Path(tree.generation_dir("1")), Path(tree.generation_dir("2"))
    same = lambda rel: (g1 / rel).stat().st_ino == (g2 / rel).stat().st_ino  # noqa: E731
    assert same("pretrained_models/demo-voice/config.json"), "an unchanged model file must be a shared hard link"
    assert not same("pretrained_models/demo-voice/voice.bin")
    assert not same("server.py"), "app files are copied: the app may write its own files in place"
    site = next((g1 / ".venv" / "lib").glob("python3*/site-packages")).relative_to(g1)
    assert same(str(site / "six.py")), "the unchanged venv must be a hard-link clone"
    rows = _gens(dist, to)
    assert [(r["id"], r["current"]) for r in rows] == [(1, False), (2, True)]
    voice = (to / "pretrained_models/demo-voice/voice.bin").stat().st_size
    app = sum(p.stat().st_size for p in g2.rglob("*") if p.is_file() and not str(p.relative_to(g2)).startswith(
        (".venv", "pretrained_models", ".cosy")))
    print("extra disk of generation 2 after a one-model-file update: %d bytes (model file %d, app copy %d)"
          % (rows[1]["own_bytes"], voice, app))
    assert rows[1]["own_bytes"] < voice + app + 256 * 1024, rows[1]
    assert rows[1]["steps"]["models"] != rows[0]["steps"]["models"] and rows[1]["steps"]["venv"] == rows[0]["steps"]["venv"]

    back = run(pyz(dist, "rollback", "--to", str(to)))
    assert back.returncode == 0, back.stderr
    assert "generation 1 is current (was 2)" in back.stdout
    assert tree_digest(to) == v1
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0
    again = run(pyz(dist, "rollback", "--to", str(to)))
    assert again.returncode == 4 and "no earlier generation to roll back to" in one_sentence(again.stderr)

    # The next update is built from generation 1; --keep 1 then leaves only it.
    third = run(apply_argv(dist, to, "--keep", "1"))
    assert third.returncode == 0, third.stderr
    assert [(r["id"], r["current"]) for r in _gens(dist, to)] == [(3, True)]
    assert sorted(os.listdir(tree.gens)) == ["3"]
    # The venv, cloned from a generation that no longer exists, through both paths.
    for python in (to / ".venv/bin/python", Path(tree.generation_dir("3")) / ".venv/bin/python"):
        proc = run([str(python), "-c", "import six, idna, sys; print(sys.prefix)"])
        assert proc.returncode == 0, proc.stderr
    mpirun = run([str(to / ".venv/bin/mpirun"), "--version"])
    assert mpirun.returncode == 0, mpirun.stdout + mpirun.stderr
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_a_new_generation_that_fails_readiness_is_rolled_back_by_apply(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    port = free_port()
    p = " ".join(pyz(dist, ""))
    first = f"{p} apply --from {dist} --to {to} --port {port}"
    proc = run(offline(first), timeout=600)
    assert proc.returncode == 0, proc.stderr
    _one_model_file(dist, tmp_path / "v2", drop_config=True)
    script = f"""
{p} apply --from {dist} --to {to} --port {port}; echo "EXIT $?"
python3 -c "import urllib.request as u; print('HTTP', u.urlopen('http://127.0.0.1:{port}/').status)"
{p} apply --from {dist} --to {to} --port {port} --no-rollback; echo "KEPT $?"
{p} stop --to {to}
"""
    proc = run(offline(script), timeout=900)
    out = proc.stdout + proc.stderr
    assert "EXIT 5" in out, out
    assert "rolled back to generation 1, whose server is ready at http://127.0.0.1:%d/" % port in out
    assert "HTTP 200" in out
    assert "KEPT 5" in out and "rolled back" not in out.split("EXIT 5")[1].split("KEPT")[0].split("HTTP 200")[1]
    rows = _gens(dist, to)
    assert [r["id"] for r in rows if r["current"]] == [3], rows
    assert 1 in [r["id"] for r in rows] and 2 not in [r["id"] for r in rows], "the failed generation 2 is removed"


def test_a_refused_update_changes_nothing(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    before = tree_digest(to, exclude=(".cosyinstall",))

    def bad_requirements(files: Dict[str, Path], manifest) -> dict:
        # Every sha256 matches, but uv is asked for a file the zip lacks: uv refuses.
        req = files["requirements.txt"]
        req.write_text(req.read_text() + "missing-pkg==1.0 --hash=sha256:%s\n" % ("0" * 64))
        return dict(manifest.meta)

    _rebuild(dist, "offline_packages.zip", tmp_path / "bad", bad_requirements)
    proc = run(apply_argv(dist, to))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert tree_digest(to, exclude=(".cosyinstall",)) == before
    assert [(r["id"], r["current"]) for r in _gens(dist, to)] == [(1, True)]
    assert sorted(os.listdir(InstallTree(str(to)).gens)) == ["1"], "the half-built generation was left behind"
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_a_rebuilt_wheel_of_the_same_version_is_really_installed(dist: Path, tmp_path: Path) -> None:
    import base64
    import hashlib

    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    marker = "# rebuilt with the same version\n"

    def rebuilt_six(files: Dict[str, Path], manifest) -> dict:
        rel = next(r for r in files if r.startswith("wheels/six-"))
        wheel = files[rel]
        out = wheel.with_suffix(".new")
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            body = src.read("six.py") + marker.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == "six.py":
                    data = body
                elif info.filename.endswith(".dist-info/RECORD"):
                    lines = [("six.py,sha256=%s,%d" % (digest, len(body))) if line.startswith("six.py,") else line
                             for line in data.decode().splitlines()]
                    data = ("\n".join(lines) + "\n").encode()
                dst.writestr(info, data)
        os.replace(out, wheel)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        req = files["requirements.txt"]
        text = req.read_text()
        old = [line for line in text.splitlines() if line.startswith("six==")][0]
        req.write_text(text.replace(old, old.split("--hash=")[0] + "--hash=sha256:" + sha))
        meta = json.loads(json.dumps(manifest.meta))
        for pkg in meta["packages"]:
            if pkg["name"] == "six":
                pkg["sha256"], pkg["size"] = sha, wheel.stat().st_size
        return meta

    _rebuild(dist, "offline_packages.zip", tmp_path / "six", rebuilt_six)
    proc = run(apply_argv(dist, to))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = next((to / ".venv" / "lib").glob("python3*/site-packages"))
    assert (site / "six.py").read_text().endswith(marker), "uv kept the old six.py of the same version"
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_a_rollback_killed_at_each_rename_leaves_one_complete_generation(dist: Path, tmp_path: Path) -> None:
    """SIGKILL delivered as `rollback` enters its 1st, 2nd, ... rename (strace's fault injection)."""
    to = tmp_path / "CosyVoice"
    assert run(apply_argv(dist, to)).returncode == 0
    v1 = tree_digest(to, STATE_AND_RECORDS)
    _one_model_file(dist, tmp_path / "v2")
    assert run(apply_argv(dist, to)).returncode == 0
    v2 = tree_digest(to, STATE_AND_RECORDS)
    killed = 0
    for when in range(1, 10):
        inject = "inject=rename,renameat,renameat2:signal=KILL:when=%d" % when
        proc = run(["strace", "-f", "-qq", "-o", os.devnull, "-e", inject] + pyz(dist, "rollback", "--to", str(to)))
        now = tree_digest(to, STATE_AND_RECORDS)
        # Whatever the moment: <to> is one complete generation, the old or the new, and verifies.
        assert tree_differences(now, v1) == [] or tree_differences(now, v2) == [], when
        check = run(pyz(dist, "verify", "--to", str(to)))
        assert check.returncode == 0, (when, check.stdout + check.stderr)
        if proc.returncode == 0:
            break  # fewer renames than `when`: the rollback ran to its end
        assert proc.returncode in (-9, 137), (when, proc.returncode, proc.stderr)
        killed += 1
        # Back to an install whose current generation is the update, for the next moment.
        if tree_differences(now, v2) != []:
            assert run(apply_argv(dist, to)).returncode == 0
    print("rollback killed at %d renames" % killed)
    assert killed >= 2, "a rollback renames at least twice (its record, the link)"
    # And a plain rollback afterwards still works or says there is nothing to go back to.
    last = run(pyz(dist, "rollback", "--to", str(to)))
    assert last.returncode in (0, 4), last.stderr
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0
