"""The orchestration modules called directly (no CLI process): journal, extract, install_steps, apply.

Each test states what a user relies on: an interrupted apply is finished by the next one,
nothing half-written appears in --to, a refused apply leaves --to untouched and takes no
lock, an unchanged bundle plans nothing, a full disk reported by uv is one sentence.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest

from support import apply_argv, one_sentence, rewrite_sums, run

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "installer"))

from cosyinstall.apply import Options, install, prepare  # noqa: E402
from cosyinstall.artifact import MANIFEST_NAME, PACKAGES_ZIP, UV_REL, ArtifactManifest  # noqa: E402
from cosyinstall.errors import ArtifactRejected, DiskFull, EnvironmentUnsuitable  # noqa: E402
from cosyinstall.extract import publish, remove_paths, stage_items, write_atomically  # noqa: E402
from cosyinstall.install_plan import Item  # noqa: E402
from cosyinstall.install_steps import Run, after_failure, todo  # noqa: E402
from cosyinstall.journal import ApplyLock, Journal  # noqa: E402
from cosyinstall.opened_bundle import Bundle  # noqa: E402
from cosyinstall.progress import NullReporter  # noqa: E402
from cosyinstall.tree import InstallTree  # noqa: E402
from cosyinstall.venv import Uv  # noqa: E402
from cosyinstall.zipread import ArtifactReader  # noqa: E402
from cosyinstall.zipwrite import Member, write_artifact  # noqa: E402

# -- journal -------------------------------------------------------------------------------


def test_a_step_is_recorded_only_when_finished_and_its_paths_survive_until_then(tmp_path: Path) -> None:
    journal = Journal(InstallTree(str(tmp_path / "to")))
    journal.finish("app", "old")
    journal.begin("app", ["a.txt"])
    journal.begin("app", ["b.txt"])  # a second interrupted attempt adds to the first's paths
    assert journal.step_done("app") is None
    assert journal.pending("app") == ["a.txt", "b.txt"]
    journal.finish("app", "new")
    assert journal.step_done("app") == "new" and journal.pending("app") is None


def test_a_torn_pending_file_still_makes_the_step_be_redone(tmp_path: Path) -> None:
    tree = InstallTree(str(tmp_path / "to"))
    journal = Journal(tree)
    journal.finish("models", "d1")
    journal.begin("models", ["m/x.bin"])
    with open(tree.record_path("models.pending.json"), "r+b") as handle:
        handle.truncate(5)  # what a disk error mid-write could leave, despite the rename
    assert journal.pending("models") == []  # interrupted, paths unknown: hash everything again
    assert journal.step_done("models") is None


def test_a_damaged_journal_means_start_over_not_a_crash(tmp_path: Path) -> None:
    tree = InstallTree(str(tmp_path / "to"))
    os.makedirs(tree.records)
    Path(tree.journal).write_bytes(b"\xff{not json")
    journal = Journal(tree)
    assert journal.load() == {} and journal.steps() == {}
    journal.mark("venv", "d")
    assert journal.step_done("venv") == "d"


def test_a_second_lock_on_the_same_tree_is_refused_naming_it(tmp_path: Path) -> None:
    tree = InstallTree(str(tmp_path / "to"))
    with ApplyLock(tree):
        with pytest.raises(EnvironmentUnsuitable) as err:
            ApplyLock(tree).acquire()
    assert "another cosyinstall apply is working on %s" % tree.root in str(err.value)
    with ApplyLock(tree) as again:  # released: free again
        assert again.held


# -- extract -------------------------------------------------------------------------------


def _artifact(tmp_path: Path, files: dict) -> Path:
    members = []
    for name, data in sorted(files.items()):
        src = tmp_path / "src" / name
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        members.append(Member(name, str(src), len(data), hashlib.sha256(data).hexdigest()))
    path = tmp_path / "a.zip"
    write_artifact(str(path), "models", "t", {"python": "3.10"}, members, {"models": []})
    return path


def _items(manifest: ArtifactManifest) -> list:
    return [Item(e.path, e.path, e.size, e.sha256, e.executable) for e in manifest.files]


def test_a_damaged_member_stops_staging_before_anything_is_published(tmp_path: Path) -> None:
    good, bad = os.urandom(4000), os.urandom(4000)  # incompressible: the member's bytes lie in the zip as they are
    path = _artifact(tmp_path, {"m/a.bin": good, "m/b.bin": bad})
    data = path.read_bytes()
    assert bad[1000:1100] in data
    path.write_bytes(data.replace(bad[1000:1100], bytes(100), 1))
    dest = tmp_path / "dest"
    (dest / "m").mkdir(parents=True)
    (dest / "m" / "a.bin").write_bytes(b"old")
    with ArtifactReader(str(path), "models") as reader:
        with pytest.raises(ArtifactRejected) as err:
            stage_items(reader, _items(reader.manifest), str(tmp_path / "staging"), NullReporter())
    assert "m/b.bin" in str(err.value)
    assert (dest / "m" / "a.bin").read_bytes() == b"old", "a failed staging touched the destination"


def test_a_complete_staging_tree_is_published_and_dropped_files_are_pruned(tmp_path: Path) -> None:
    path = _artifact(tmp_path, {"m/a.bin": b"new a", "m/sub/c.txt": b"c"})
    staging, dest = tmp_path / "staging", tmp_path / "dest"
    (dest / "m" / "gone").mkdir(parents=True)
    (dest / "m" / "gone" / "old.txt").write_bytes(b"old")
    (dest / "m" / "a.bin").write_bytes(b"old a")
    with ArtifactReader(str(path), "models") as reader:
        written = stage_items(reader, _items(reader.manifest), str(staging), NullReporter())
    publish(str(staging), str(dest), [e.path for e in written])
    assert remove_paths(str(dest), ["m/gone/old.txt"]) == ["m/gone/old.txt"]
    assert (dest / "m" / "a.bin").read_bytes() == b"new a" and (dest / "m" / "sub" / "c.txt").read_bytes() == b"c"
    assert not (dest / "m" / "gone").exists(), "an emptied directory was left behind"


def test_a_write_that_fails_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_bytes(b"old content")

    def write(out) -> None:
        out.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DiskFull) as err:
        write_atomically(str(target), str(tmp_path), write, False)
    assert err.value.exit_code == 4 and str(target) in str(err.value)
    assert target.read_bytes() == b"old content" and os.listdir(tmp_path) == ["f.txt"]


# -- install_steps and apply on the packed demo --------------------------------------------


def test_every_step_is_planned_until_the_journal_records_it(dist: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tree = InstallTree(str(tmp_path / "to"))
    journal = Journal(tree)
    bundle = Bundle(str(dist), {}, NullReporter())
    try:
        steps = todo(bundle, journal)
        assert [s for s, _ in steps] == ["app", "venv", "models"]
        for step, digest in steps:
            journal.finish(step, digest)
        # Recorded, but nothing is on disk here: a step whose output is missing is still planned.
        assert [s for s, _ in todo(bundle, journal)] == ["app", "venv", "models"]
        import cosyinstall.install_steps

        monkeypatch.setattr(cosyinstall.install_steps, "missing_output", lambda tree, step: None)
        assert todo(bundle, journal) == []
        journal.begin("venv", [])  # e.g. verify marked it damaged
        assert [s for s, _ in todo(bundle, journal)] == ["venv"]
    finally:
        bundle.close()


def test_a_failed_first_install_leaves_the_folder_as_it_was_found(dist: Path, tmp_path: Path) -> None:
    tree = InstallTree(str(tmp_path / "to"))
    journal = Journal(tree)
    os.makedirs(tree.models)
    Path(tree.app_path("server.py")).write_bytes(b"half")
    journal.begin("app", ["server.py"])
    bundle = Bundle(str(dist), {}, NullReporter())
    try:
        with ApplyLock(tree) as lock:
            left = after_failure(Run(tree, bundle, NullReporter(), None, lock), fresh=True, existed=False)
    finally:
        bundle.close()
    assert left is False and not os.path.exists(tree.root)


def test_prepare_refuses_without_taking_the_lock_or_writing(tmp_path: Path) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / PACKAGES_ZIP).write_bytes(b"not a zip at all")
    tree = InstallTree(str(tmp_path / "to"))
    with prepare(Options(str(upload), tree), NullReporter()) as prepared:
        assert prepared.blocked and not prepared.lock.held
        assert any(f.check == PACKAGES_ZIP and not f.ok for f in prepared.findings)
        with pytest.raises(ArtifactRejected) as err:
            install(prepared)
    assert err.value.exit_code == 3 and PACKAGES_ZIP in str(err.value)
    assert not os.path.exists(tree.root), "a refused apply wrote into --to"


def test_a_second_apply_of_the_same_bundle_plans_and_changes_nothing(dist: Path, tmp_path: Path) -> None:
    to = tmp_path / "CosyVoice"
    first = run(apply_argv(dist, to))
    assert first.returncode == 0, first.stderr
    tree = InstallTree(str(to))
    before = Path(tree.journal).read_bytes()
    with prepare(Options(str(dist), tree), NullReporter()) as prepared:
        assert not prepared.blocked and prepared.lock.held
        assert prepared.steps == []
        outcome = install(prepared)
    assert outcome.ran == [] and outcome.server is not None
    assert ArtifactManifest.from_bytes(Path(tree.manifest_copy("packages")).read_bytes()).server() == outcome.server
    assert Path(tree.journal).read_bytes() == before


# -- uv reporting a full disk --------------------------------------------------------------

UV_STAND_IN = b"#!/bin/sh\necho 'error: failed to write to file: No space left on device (os error 28)' >&2\nexit 2\n"


def test_uv_reporting_a_full_disk_raises_disk_full(tmp_path: Path) -> None:
    stand_in = tmp_path / "uv"  # a stand-in: a real uv cannot be made to fill a disk on demand
    stand_in.write_bytes(UV_STAND_IN)
    stand_in.chmod(0o755)
    uv = Uv(str(stand_in), str(tmp_path / "cache"))
    with pytest.raises(DiskFull) as err:
        uv.install(InstallTree(str(tmp_path / "to")), str(tmp_path), None)
    assert err.value.exit_code == 4 and "the disk filled up during installing packages" in str(err.value)


def test_apply_whose_uv_reports_a_full_disk_exits_4_with_one_sentence(dist: Path, tmp_path: Path) -> None:
    """The bundled uv/uv replaced by a stand-in that fails the way uv does on a full disk."""
    path = dist / PACKAGES_ZIP
    work = tmp_path / "unpacked"
    with zipfile.ZipFile(path) as z:
        manifest = ArtifactManifest.from_bytes(z.read(MANIFEST_NAME))
        z.extractall(work, [e.path for e in manifest.files])
    (work / UV_REL).write_bytes(UV_STAND_IN)
    members = [Member(e.path, str(work / e.path), (work / e.path).stat().st_size, None, e.executable)
               for e in manifest.files]
    write_artifact(str(path), manifest.kind, manifest.name, manifest.target, members, manifest.meta)
    rewrite_sums(dist)
    to = tmp_path / "CosyVoice"
    proc = run(apply_argv(dist, to))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    sentence = one_sentence(proc.stderr)
    assert "the disk filled up during creating the venv" in sentence and "run apply again" in sentence
    # The app step finished before the venv step failed; the half-built generation is not kept.
    assert "nothing was left behind" in sentence
    assert not os.path.lexists(to) and not (tmp_path / ".CosyVoice.cosy").exists(), "a half-built install was left"
