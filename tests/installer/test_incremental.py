"""Incremental updates: a new artifact re-applies only what it changes.

A new pretrained_models.zip touches only pretrained_models/ (the venv keeps every inode and
mtime); a new offline_packages.zip whose app changed touches only the app; one whose lock
dropped a package removes just that package. Files no longer listed are removed; unchanged
files are not rewritten.
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List

from support import apply_argv, pyz, rewrite_sums, run, tree_snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))

from cosyinstall.artifact import ArtifactManifest  # noqa: E402
from cosyinstall.zipwrite import Member, write_artifact  # noqa: E402


def _rebuild(dist: Path, name: str, work: Path, change: Callable[[Dict[str, Path], ArtifactManifest], dict]) -> None:
    """Rewrite dist/name from its own members after `change` edits the unpacked files.

    `change(files, manifest)` gets path -> unpacked file (add, remove or edit entries) and
    returns the manifest meta to write.
    """
    path = dist / name
    with zipfile.ZipFile(path) as z:
        manifest = ArtifactManifest.from_bytes(z.read("MANIFEST.json"))
        z.extractall(work, [e.path for e in manifest.files])
    files = {e.path: work / e.path for e in manifest.files}
    executable = {e.path for e in manifest.files if e.executable}
    meta = change(files, manifest)
    members = [Member(p, str(f), f.stat().st_size, None, p in executable) for p, f in sorted(files.items())]
    write_artifact(str(path), manifest.kind, manifest.name, manifest.target, members, meta)
    rewrite_sums(dist)


def _part(snapshot: Dict[str, tuple], prefix: str) -> Dict[str, tuple]:
    return {k: v for k, v in snapshot.items() if k.startswith(prefix)}


def _steps_run(stderr: str) -> List[str]:
    return sorted({line.split(":")[0].split()[1] for line in stderr.splitlines() if line.startswith("step ")})


def _timed_apply(dist: Path, to: Path):
    started = time.monotonic()
    proc = run(apply_argv(dist, to))
    return proc, time.monotonic() - started


def test_new_models_zip_touches_only_the_models(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    full, full_seconds = _timed_apply(dist, to)
    assert full.returncode == 0, full.stderr
    before = tree_snapshot(to)
    venv_before = _part(before, ".venv/")
    assert venv_before

    def change(files: Dict[str, Path], manifest: ArtifactManifest) -> dict:
        files["demo-voice/voice.bin"].write_bytes(os.urandom(4096))  # changed
        del files["demo-voice/config.json"]  # dropped
        added = files["demo-voice/voice.bin"].parent / "speaker2.bin"
        added.write_bytes(os.urandom(1000))
        files["demo-voice/speaker2.bin"] = added  # added
        return dict(manifest.meta)

    _rebuild(dist, "pretrained_models.zip", tmp_path / "v2", change)
    update, update_seconds = _timed_apply(dist, to)
    assert update.returncode == 0, update.stderr
    print("full apply %.2fs, models-only update %.2fs (%.0f%%)"
          % (full_seconds, update_seconds, 100.0 * update_seconds / full_seconds))
    assert _steps_run(update.stderr) == ["models"], update.stderr
    assert "installed into %s (models)" % to in update.stdout
    assert "models: 2 files written" in update.stderr and "1 removed" in update.stderr
    after = tree_snapshot(to)
    # The venv and the app: same inode, mtime and size for every file, but for the models'
    # own wheels: uv installs them from their path in the new generation, so it reinstalls them.
    assert {k: v for k, v in _part(after, ".venv/").items() if "demofrd" not in k} == \
        {k: v for k, v in venv_before.items() if "demofrd" not in k}
    # App files are copied into each generation (the app may write its own files in place): same mtime and size.
    skip = (".venv/", "pretrained_models/", ".cosyinstall/", ".cosygen/")
    assert {k: v[1:] for k, v in after.items() if not k.startswith(skip)} == \
        {k: v[1:] for k, v in before.items() if not k.startswith(skip)}
    models = to / "pretrained_models" / "demo-voice"
    assert not (models / "config.json").exists()
    assert (models / "speaker2.bin").stat().st_size == 1000
    # Untouched model files (the other model) were not rewritten.
    assert _part(after, "pretrained_models/demo-frd/demofrd-0.1") == _part(before, "pretrained_models/demo-frd/demofrd-0.1")
    assert after["pretrained_models/demo-voice/voice.bin"][0] != before["pretrained_models/demo-voice/voice.bin"][0]
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_new_packages_zip_with_only_app_changes_leaves_the_venv_alone(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    before = tree_snapshot(to)

    def change(files: Dict[str, Path], manifest: ArtifactManifest) -> dict:
        del files["app/README.md"]
        note = files["app/server.py"].parent / "NOTES.md"
        note.write_text("new in v2\n")
        files["app/NOTES.md"] = note
        return dict(manifest.meta)

    _rebuild(dist, "offline_packages.zip", tmp_path / "v2", change)
    update = run(apply_argv(dist, to))
    assert update.returncode == 0, update.stderr
    assert _steps_run(update.stderr) == ["app"], update.stderr
    after = tree_snapshot(to)
    assert _part(after, ".venv/") == _part(before, ".venv/")
    assert _part(after, "pretrained_models/") == _part(before, "pretrained_models/")
    assert not (to / "README.md").exists() and (to / "NOTES.md").read_text() == "new in v2\n"
    # Copied into the new generation, not rewritten from the zip: same mtime and size.
    assert after["server.py"][1:] == before["server.py"][1:], "an unchanged app file was rewritten"
    assert run(pyz(dist, "verify", "--to", str(to))).returncode == 0


def test_a_package_dropped_from_the_lock_is_removed_and_the_rest_is_not_reinstalled(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    before = tree_snapshot(to)

    def change(files: Dict[str, Path], manifest: ArtifactManifest) -> dict:
        idna = [p for p in files if p.startswith("wheels/idna-")]
        assert idna
        del files[idna[0]]
        req = files["requirements.txt"]
        req.write_text("".join(line for line in req.read_text().splitlines(True) if not line.startswith("idna==")))
        meta = dict(manifest.meta)
        meta["packages"] = [p for p in meta["packages"] if p["name"] != "idna"]
        return meta

    _rebuild(dist, "offline_packages.zip", tmp_path / "v2", change)
    update = run(apply_argv(dist, to))
    assert update.returncode == 0, update.stderr
    assert "venv" in _steps_run(update.stderr) and "app" not in _steps_run(update.stderr)
    assert "removing packages" in update.stderr and "venv: building" not in update.stderr
    after = tree_snapshot(to)
    site = ".venv/lib/python3.10/site-packages/"
    assert not [k for k in after if k.startswith(site + "idna")]
    six = {k: v for k, v in before.items() if k.startswith(site + "six")}
    assert six and all(after.get(k) == v for k, v in six.items()), "six was reinstalled"
    assert after[".venv/bin/python"] == before[".venv/bin/python"]
    verify = run(pyz(dist, "verify", "--to", str(to)))
    assert verify.returncode == 0, verify.stderr


def test_same_artifacts_again_change_nothing(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "to"
    assert run(apply_argv(dist, to)).returncode == 0
    before = tree_snapshot(to)
    again = run(apply_argv(dist, to))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert _steps_run(again.stderr) == []
    after = tree_snapshot(to)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {".cosygen/state.json", ".cosyinstall/install.log"}, changed
