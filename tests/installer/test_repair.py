"""A damaged journal or state file, or a deleted step output, is repaired by the next plain apply.

One demo install per module; each case damages it, runs `apply` (offline) and requires exit 0,
`verify` passing and the tree equal to the clean install's, then a second apply that changes
nothing. The journal cases are the issue's: state.json nested 200,000 deep, with wrong types,
as a directory, as random bytes; the output cases: a deleted `.venv` (once answered with
"nothing changed"), a deleted or truncated model file, a deleted app file.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from support import STATE_AND_RECORDS, apply_argv, pyz, run, tree_differences, tree_digest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))

from cosyinstall.tree import InstallTree  # noqa: E402

NESTED = b"[" * 200000 + b"]" * 200000


@pytest.fixture(scope="module")
def installed(demo_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, dict]:
    to = tmp_path_factory.mktemp("repair") / "to"
    first = run(apply_argv(demo_dist, to))
    assert first.returncode == 0, first.stderr
    return to, tree_digest(to, STATE_AND_RECORDS)


def _write(path: str, data: bytes) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    with open(path, "wb") as out:
        out.write(data)


def _as_directory(path: str) -> None:
    os.unlink(path)
    os.makedirs(os.path.join(path, "inside"))


def _steps_run(stderr: str) -> list:
    return sorted({line.split(":")[0].split()[1] for line in stderr.splitlines() if line.startswith("step ")})


def _repaired(dist: Path, to: Path, clean: dict, label: str) -> str:
    again = run(apply_argv(dist, to))
    assert again.returncode == 0, (label, again.stdout, again.stderr[-3000:])
    assert "Traceback" not in again.stderr, (label, again.stderr)
    verify = run(pyz(dist, "verify", "--to", str(to)))
    assert verify.returncode == 0, (label, verify.stderr)
    differ = tree_differences(clean, tree_digest(to, STATE_AND_RECORDS))
    assert not differ, (label, differ[:10])
    settled = run(apply_argv(dist, to))
    assert settled.returncode == 0 and "nothing changed" in settled.stdout, (label, settled.stdout, settled.stderr)
    return again.stderr


JOURNAL: Dict[str, Callable[[InstallTree], None]] = {
    "state.json nested 200,000 deep": lambda t: _write(t.journal, NESTED),
    "state.json with steps as a list": lambda t: _write(t.journal, b'{"steps": ["app", "venv", "models"]}'),
    "state.json with wrong types inside": lambda t: _write(
        t.journal, b'{"steps": {"app": 5, "venv": ["x"], "models": null}, "uploads": "everything"}'),
    "state.json as a list": lambda t: _write(t.journal, b"[1, 2, 3]"),
    "state.json with a 5,000-digit number": lambda t: _write(t.journal, b'{"steps": ' + b"9" * 5000 + b"}"),
    "state.json as a directory": lambda t: _as_directory(t.journal),
    "state.json of random bytes": lambda t: _write(t.journal, os.urandom(4096)),
    "state.json of 40 MB of spaces": lambda t: _write(t.journal, b" " * (40 << 20)),
    "a pending file nested 200,000 deep": lambda t: _write(t.state_path("venv.pending.json"), NESTED),
    "a pending file as a directory": lambda t: os.makedirs(t.state_path("app.pending.json", "x")),
    "venv.json nested 200,000 deep": lambda t: _write(t.venv_record, NESTED),
    "model-steps.json with wrong types": lambda t: _write(t.model_steps_record, b'{"made": [1], "archives": 7}'),
    "the installed models manifest as a directory": lambda t: _as_directory(t.manifest_copy("models")),
}


@pytest.mark.parametrize("case", list(JOURNAL))
def test_damaged_state_is_treated_as_unknown_and_repaired(case: str, installed: Tuple[Path, dict],
                                                          demo_dist: Path) -> None:
    to, clean = installed
    JOURNAL[case](InstallTree(str(to)))
    _repaired(demo_dist, to, clean, case)


OUTPUTS: Dict[str, Tuple[Callable[[Path], None], str]] = {
    "deleted .venv": (lambda to: shutil.rmtree(to / ".venv"), "venv"),
    "deleted model file": (lambda to: (to / "pretrained_models" / "demo-voice" / "voice.bin").unlink(), "models"),
    "truncated model file": (lambda to: os.truncate(to / "pretrained_models" / "demo-voice" / "voice.bin", 10),
                             "models"),
    "deleted model folder": (lambda to: shutil.rmtree(to / "pretrained_models" / "demo-frd"), "models"),
}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_missing_step_output_makes_apply_redo_that_step(case: str, installed: Tuple[Path, dict],
                                                        demo_dist: Path) -> None:
    to, clean = installed
    damage, step = OUTPUTS[case]
    damage(to)
    stderr = _repaired(demo_dist, to, clean, case)
    assert step in _steps_run(stderr), (case, stderr)


def test_deleted_app_file_makes_apply_redo_the_app_step(installed: Tuple[Path, dict], demo_dist: Path) -> None:
    to, clean = installed
    app_files = sorted(p for p in to.rglob("*.py") if not {".venv", ".cosyinstall", "pretrained_models"}
                       & set(p.relative_to(to).parts))
    assert app_files, "the demo app has no .py file"
    app_files[0].unlink()
    stderr = _repaired(demo_dist, to, clean, "deleted app file")
    assert _steps_run(stderr) == ["app"], stderr
