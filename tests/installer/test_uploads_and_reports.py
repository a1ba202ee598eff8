"""Issue 14, points 3-4: where the uploads are found, truthful preflight rows, status's table and
exit codes, and the versioned --json of check, verify and status."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cosyinstall import fromdir
from cosyinstall.errors import ArtifactRejected
from cosyinstall.reports import STATUS_EXIT, status_document, status_lines
from support import one_sentence, pyz, run


def test_without_from_the_pyz_folder_is_used_when_it_holds_the_uploads(dist: Path, tmp_path: Path) -> None:
    proc = run(pyz(dist, "check", "--to", str(tmp_path / "to")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the uploads are read from %s, the folder holding the pyz" % dist in proc.stderr
    assert "preflight passed: %s can be installed" % dist in proc.stdout


def test_a_browser_renamed_upload_is_named_with_its_fix(dist: Path, tmp_path: Path) -> None:
    (dist / "offline_packages.zip").rename(dist / "offline_packages (1).zip")
    proc = run(pyz(dist, "check", "--from", str(dist), "--to", str(tmp_path / "to")))
    assert proc.returncode == 3
    line = one_sentence(proc.stderr)
    assert "offline_packages (1).zip looks like it" in line and "rename it to offline_packages.zip" in line


def test_uploads_one_level_down_are_named(dist: Path, tmp_path: Path) -> None:
    parent = tmp_path / "autodl-tmp"
    parent.mkdir()
    shutil.move(str(dist), str(parent / "upload"))
    proc = run(pyz(parent / "upload", "check", "--from", str(parent), "--to", str(tmp_path / "to")))
    assert proc.returncode == 3
    assert "pass --from %s" % (parent / "upload") in one_sentence(proc.stderr)


def test_a_default_from_moves_into_the_one_folder_below_that_holds_uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "up" / "sub").mkdir(parents=True)
    (tmp_path / "up" / "sub" / "SHA256SUMS").write_text("")
    monkeypatch.setattr(fromdir, "DEFAULT_FROM", str(tmp_path / "up"))
    folder, note = fromdir.locate_uploads(None, argv0="")
    assert folder == str(tmp_path / "up" / "sub") and "one level below" in note
    (tmp_path / "up" / "pretrained_models(2).zip").write_bytes(b"x")
    (tmp_path / "up" / "other").mkdir()
    (tmp_path / "up" / "other" / "SHA256SUMS").write_text("")
    with pytest.raises(ArtifactRejected, match="looks like pretrained_models.zip"):
        fromdir.locate_uploads(None, argv0="")


def test_the_python_row_never_claims_a_venv_that_is_not_there(dist: Path, tmp_path: Path) -> None:
    (dist / "offline_packages.zip").unlink()
    (dist / "SHA256SUMS").unlink()
    to = tmp_path / "to"
    proc = run(pyz(dist, "check", "--from", str(dist), "--to", str(to)))
    assert proc.returncode == 3, proc.stdout + proc.stderr  # a models-only upload needs an installed tree
    assert "already installed" not in proc.stdout
    assert "not needed: these uploads hold no offline_packages.zip" in proc.stdout
    assert not to.exists()


def test_check_json_is_versioned_and_carries_the_exit_code(dist: Path, tmp_path: Path) -> None:
    proc = run(pyz(dist, "check", "--json", "--from", str(dist), "--to", str(tmp_path / "to")))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "cosy-offline/check/1" and doc["ok"] is True and doc["exit_code"] == 0
    assert {"python", "disk", "write"} <= {row["check"] for row in doc["rows"]}
    with open(dist / "offline_packages.zip", "r+b") as handle:
        handle.truncate(1000)
    proc = run(pyz(dist, "check", "--json", "--from", str(dist), "--to", str(tmp_path / "to")))
    assert proc.returncode == 3
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 3
    assert any(row["status"] == "FAIL" and "truncated" in row["detail"] for row in doc["rows"])


def test_verify_and_status_on_an_empty_tree(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    proc = run(pyz(dist, "verify", "--json", "--to", str(to)))
    assert proc.returncode == 3
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "cosy-offline/verify/1" and doc["ok"] is False and doc["problems"]
    proc = run(pyz(dist, "status", "--to", str(to)))
    assert proc.returncode == 3
    assert proc.stdout.split() == ["server", "nothing", "is", "installed", "in", str(to)]
    proc = run(pyz(dist, "status", "--json", "--to", str(to)))
    assert proc.returncode == 3
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "cosy-offline/status/1" and doc["state"] == "not-installed"
    assert not to.exists()


def _info(**kw) -> dict:
    base = {"running": False, "ready": False, "pid": None, "port": 6008, "uptime": None, "log": "/t/server.log",
            "launcher": None, "url": None, "http_status": None, "stale_pid_file": False, "leftovers": []}
    base.update(kw)
    return base


@pytest.mark.parametrize("info, installed, state, code, words", [
    (_info(running=True, ready=True, pid=42, uptime=125.3, url="http://127.0.0.1:6008/", http_status=200,
           launcher="mpirun"), True, "ready", 0, "running and ready (pid 42, up 2m05s)"),
    (_info(running=True, pid=42, uptime=3.0, http_status=503, url="http://127.0.0.1:6008/"), True, "not-ready", 5,
     "running but not ready: HTTP 503"),
    (_info(stale_pid_file=True, leftovers=[77]), True, "stopped", 6, "processes it started still run: 77"),
    (_info(), False, "not-installed", 3, "nothing is installed in /t"),
])
def test_status_states_exit_codes_and_a_short_table(info: dict, installed: bool, state: str, code: int, words: str) -> None:
    doc = status_document(info, installed, "/t")
    assert doc["state"] == state and STATUS_EXIT[state] == code
    lines = status_lines(doc)
    assert len(lines) <= 5 and words in "\n".join(lines)
    assert "leftovers []" not in "\n".join(lines) and "2.8003" not in "\n".join(lines)
    assert os.linesep not in "".join(lines)
