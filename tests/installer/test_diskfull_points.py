"""A disk that fills at different points of an update ends in exit 4 and one sentence each time.

--to lives on a small tmpfs. The fill happens after preflight has passed, as in test_diskfull: the
test holds the apply lock, lets `apply --wait` pass preflight and block, fills the tmpfs with
a ballast file that leaves a chosen number of bytes free, then lets go. The update adds a 1 MB
app file, a 3 MB model file and a 3 MB file inside the archive the demo-frd model unzips, so
each amount left free runs out at a different point (staging the app, staging the models, the
model steps' unzip while the models step installs).

Every time the update is built aside (generations): the old tree is exactly as it was and
verifies, and with the space back the same apply converges to a clean install of the update.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List

from support import apply_argv, one_sentence, pyz, run, tree_differences, tree_digest
from test_diskfull import _tmpfs, apply_with_disk_left
from test_incremental import _rebuild

MB = 1 << 20


def _update(demo: Path, work: Path) -> Path:
    up = work / "update"
    shutil.copytree(demo, up)

    def app(files: Dict[str, Path], manifest) -> dict:
        big = work / "app-big.bin"
        big.write_bytes(os.urandom(MB))
        files["app/asset/big.bin"] = big
        return dict(manifest.meta)

    def models(files: Dict[str, Path], manifest) -> dict:
        files["demo-voice/voice.bin"].write_bytes(os.urandom(3 * MB))
        resource = files["demo-frd/resource.zip"]
        with zipfile.ZipFile(resource) as old:
            kept = [(i.filename, old.read(i)) for i in old.infolist()]
        with zipfile.ZipFile(resource, "w") as new:
            for name, data in kept:
                new.writestr(name, data)
            new.writestr("resource/big.bin", os.urandom(3 * MB))
        return dict(manifest.meta)

    _rebuild(up, "offline_packages.zip", work / "p", app)
    _rebuild(up, "pretrained_models.zip", work / "m", models)
    return up


def _differ(a: dict, b: dict) -> List[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def test_disk_filling_at_several_points_of_an_update(demo_dist: Path, tmp_path: Path) -> None:
    up = _update(demo_dist, tmp_path)
    with _tmpfs(tmp_path / "disk", "600m") as disk:
        # --to inside the disk: <to> becomes the link that switches generations, beside its home.
        to = disk / "CosyVoice"
        first = run(apply_argv(up, to))
        assert first.returncode == 0, first.stderr
        clean_update = tree_digest(to)
        for child in list(disk.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        phases = []
        for leave in (256 * 1024, 3 * MB, 9 * MB):
            label = "%d bytes left" % leave
            old = run(apply_argv(demo_dist, to))
            assert old.returncode == 0, (label, old.stderr)
            old_tree = tree_digest(to)
            proc, filler = apply_with_disk_left(up, to, leave, disk)
            assert proc.returncode == 4, (label, proc.stdout, proc.stderr[-3000:])
            sentence = one_sentence(proc.stderr)
            assert "the disk filled up" in sentence and "free some space and run apply again" in sentence, sentence
            steps = [line.strip() for line in proc.stderr.splitlines() if line.startswith("step ")]
            phases.append(steps[-1] if steps else "")
            filler.unlink()
            # The update was built aside: the old tree is exactly as it was and verifies.
            verify = run(pyz(demo_dist, "verify", "--to", str(to)))
            assert verify.returncode == 0, (label, verify.stderr)
            assert not _differ(old_tree, tree_digest(to)), (label, _differ(old_tree, tree_digest(to))[:10])
            again = run(apply_argv(up, to))
            assert again.returncode == 0, (label, again.stderr[-3000:])
            assert run(pyz(up, "verify", "--to", str(to))).returncode == 0, label
            differ = tree_differences(clean_update, tree_digest(to))
            assert not differ, (label, differ[:10])
            leftovers = {"staging", "uv-cache", "work", "model-steps.tmp"} & set(os.listdir(to / ".cosyinstall"))
            assert not leftovers, (label, leftovers)
        print("disk filled while: %s" % phases)
        # The first two fill while staging (after different amounts of it), the last in the model steps.
        assert all("extracting and verifying" in p for p in phases[:2]) and phases[2] == "step models: installing", phases
