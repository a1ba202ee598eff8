"""The extra disk one generation costs after a one-model-file update (issue 13).

    python bench/generation_cost.py --dist DIST [--mb 64]

DIST is a packed bundle (`cosybuild pack demo --out DIST`); it is copied, installed offline
into a temporary --to, then one model file is replaced by MB random megabytes in a rebuilt
pretrained_models.zip and applied again. Printed: the new generation's own bytes (files not
shared through hard links with the previous one) against a full copy of the install.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "installer"))
sys.path.insert(0, str(REPO / "tests"))

from cosyinstall.artifact import ArtifactManifest  # noqa: E402
from cosyinstall.zipwrite import Member, write_artifact  # noqa: E402
from support import apply_argv, pyz, rewrite_sums  # noqa: E402


def _size(root: Path) -> int:
    seen, total = set(), 0
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dist", required=True)
    parser.add_argument("--mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        shutil.copytree(args.dist, dist)
        to = Path(tmp) / "CosyVoice"
        subprocess.run(apply_argv(dist, to), check=True, capture_output=True)
        path = dist / "pretrained_models.zip"
        work = Path(tmp) / "v2"
        with zipfile.ZipFile(path) as z:
            manifest = ArtifactManifest.from_bytes(z.read("MANIFEST.json"))
            z.extractall(work, [e.path for e in manifest.files])
        changed = sorted(e.path for e in manifest.files)[-1]
        with open(work / changed, "wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(1 << 20))
        members = [Member(e.path, str(work / e.path), (work / e.path).stat().st_size, None, e.executable)
                   for e in manifest.files]
        write_artifact(str(path), "models", manifest.name, manifest.target, members, manifest.meta)
        rewrite_sums(dist)
        subprocess.run(apply_argv(dist, to), check=True, capture_output=True)
        rows = json.loads(subprocess.run(pyz(dist, "generations", "--json", "--to", str(to)), check=True,
                                         capture_output=True, text=True).stdout)
        new = [r for r in rows if r["current"]][0]
        full = _size(Path(new["path"]))
        print("one model file of %d MiB changed (%s)" % (args.mb, changed))
        print("generation %d: %d bytes of its own, a full copy would be %d bytes (%.1f%%)"
              % (new["id"], new["own_bytes"], full, 100.0 * new["own_bytes"] / full))
        print("beyond the changed file: %d bytes (the app, copied)" % (new["own_bytes"] - (args.mb << 20)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
