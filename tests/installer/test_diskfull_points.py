"""A disk that fills at different points of an update (staging the app, staging the models,
the model steps' unzip) ends in exit 4 and one sentence each time, and once space is back a
plain apply converges to a clean install of the update.

--to is a small tmpfs. The fill happens after preflight has passed, as in test_diskfull: the
test holds the apply lock, lets `apply --wait` pass preflight and block, fills the tmpfs with
a ballast file that leaves a chosen number of bytes free, then lets go. The update adds a 1 MB
app file, a 3 MB model file and a 3 MB file inside the archive the demo-frd model unzips, so
each amount left free runs out at a different point.

A fill while staging leaves the old tree exactly as it was (it verifies). A fill in the model
steps comes after the new models were published: verify then names the unfinished models step
(exit 3) and the next apply redoes it; completing the model steps aside before switching them
in (issue 12 point 6) will make that case leave the old tree verifying too.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List

from support import apply_argv, one_sentence, pyz, run, tree_digest
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
        points = ((256 * 1024, ".cosyinstall/staging/app/asset/big.bin"),
                  (3 * MB, ".cosyinstall/staging/models/"),
                  (9 * MB, "pretrained_models/demo-frd/resource/big.bin"))  # the model steps' unzip
        for leave, where in points:
            label = "%d bytes left" % leave
            old = run(apply_argv(demo_dist, to))
            assert old.returncode == 0, (label, old.stderr)
            old_tree = tree_digest(to)
            proc, filler = apply_with_disk_left(up, to, leave, disk)
            assert proc.returncode == 4, (label, proc.stdout, proc.stderr[-3000:])
            sentence = one_sentence(proc.stderr)
            assert "the disk filled up" in sentence and "free some space and run apply again" in sentence, sentence
            assert "while writing %s/%s" % (to, where) in sentence, (label, sentence)
            committing = "step models: installing" in proc.stderr
            phases.append("committing" if committing else "staging")
            filler.unlink()
            verify = run(pyz(demo_dist, "verify", "--to", str(to)))
            if not committing:
                # Nothing was switched: the old tree is exactly as it was and verifies.
                assert verify.returncode == 0, (label, verify.stderr)
                assert not _differ(old_tree, tree_digest(to)), (label, _differ(old_tree, tree_digest(to))[:10])
            else:
                # The model steps ran out after the new models were published: verify names the step,
                # which the next apply redoes.
                assert verify.returncode == 3 and "models" in verify.stderr, (label, verify.stderr)
            again = run(apply_argv(up, to))
            assert again.returncode == 0, (label, again.stderr[-3000:])
            assert run(pyz(up, "verify", "--to", str(to))).returncode == 0, label
            assert not _differ(clean_update, tree_digest(to)), (label, _differ(clean_update, tree_digest(to))[:10])
            leftovers = {"staging", "uv-cache", "work", "model-steps.tmp"} & set(os.listdir(to / ".cosyinstall"))
            assert not leftovers, (label, leftovers)
        print("disk filled while: %s" % phases)
        assert phases == ["staging", "staging", "committing"], phases
