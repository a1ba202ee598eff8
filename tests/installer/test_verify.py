"""`cosyinstall verify`: re-hash the app and models, check the venv's packages, report all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from support import apply_argv, one_sentence, pyz, run


def test_every_difference_is_reported_and_exit_is_3(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    ok = run(pyz(dist, "verify", "--to", str(to)))
    assert ok.returncode == 0 and "matches its manifests" in ok.stdout
    (to / "server.py").write_text("# edited by hand\n")
    (to / "pretrained_models" / "demo-voice" / "config.json").unlink()
    weights = to / "pretrained_models" / "demo-voice" / "voice.bin"
    data = bytearray(weights.read_bytes())
    data[0] ^= 1
    weights.write_bytes(bytes(data))
    site = next((to / ".venv" / "lib").glob("python*/site-packages"))
    shutil.rmtree(next(site.glob("idna-*.dist-info")))
    six = next(site.glob("six-*.dist-info"))
    os.rename(six, six.with_name("six-1.15.0.dist-info"))
    proc = run(pyz(dist, "verify", "--to", str(to)))
    assert proc.returncode == 3
    sentence = one_sentence(proc.stderr)
    assert "and 4 more listed above" in sentence and "run cosyinstall apply to repair" in sentence
    report = proc.stderr
    assert "%s has 17 bytes" % (to / "server.py") in report
    assert "config.json is missing" in report
    assert "voice.bin differs from its manifest (sha256)" in report
    assert "package idna 3.10 is not installed" in report
    assert "package six is 1.15.0" in report and "1.16.0 expected" in report
    assert "it will redo: app, venv, models" in sentence
    repair = run(apply_argv(dist, to))
    assert repair.returncode == 0, repair.stderr
    assert "app: 1 files written, 2 unchanged" in repair.stderr  # only the damaged file is rewritten
    again = run(pyz(dist, "verify", "--to", str(to)))
    assert again.returncode == 0, again.stderr


def test_verify_on_nothing_installed(dist: Path, tmp_path: Path) -> None:
    proc = run(pyz(dist, "verify", "--to", str(tmp_path / "none")))
    assert proc.returncode == 3 and "nothing is installed" in one_sentence(proc.stderr)


def test_an_unfinished_step_is_reported(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    (to / ".cosygen" / "models.pending.json").write_text('{"paths": []}')
    import json

    state = json.loads((to / ".cosygen" / "state.json").read_text())
    del state["steps"]["models"]
    (to / ".cosygen" / "state.json").write_text(json.dumps(state))
    proc = run(pyz(dist, "verify", "--to", str(to)))
    assert proc.returncode == 3 and "the models step of the last apply did not finish" in proc.stderr
    again = run(apply_argv(dist, to))
    assert again.returncode == 0 and "(models)" in again.stdout
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_a_broken_venv_is_rebuilt_and_the_models_wheels_come_back(dist: Path, tmp_path: Path) -> None:
    """Repairing only the venv re-runs the models' own install steps: a new venv lacks their wheels."""
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    site = next((to / ".venv" / "lib").glob("python*/site-packages"))
    carried = sorted(p.name for p in site.glob("demofrd*.dist-info"))
    shutil.rmtree(next(site.glob("idna-*.dist-info")))
    proc = run(pyz(dist, "verify", "--to", str(to)))
    assert proc.returncode == 3 and "(it will redo: venv)" in one_sentence(proc.stderr)
    repair = run(apply_argv(dist, to))
    assert repair.returncode == 0, repair.stderr
    assert "installed into %s (venv)" % to in repair.stdout and "venv: building" in repair.stderr
    if carried:
        assert "re-running the model steps" in repair.stderr
        assert sorted(p.name for p in site.glob("demofrd*.dist-info")) == carried
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0
