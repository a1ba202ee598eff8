"""Benchmark: writing and extracting an artifact against `zip` and `unzip`, side by side.

Makes a model-like tree (incompressible weights plus small text files), then times:
  pack:    cosyinstall.zipwrite.write_artifact (hashes every byte)   vs  zip -r (stores .bin like we do)
  extract: verified extraction (hash + size check per member)        vs  unzip -q
  check:   SHA256SUMS verification of the zip (sha256 of the file)   vs  cat > /dev/null
and prints each ratio. Run: python bench/artifact_vs_zip.py [--mb 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "installer"))

from cosyinstall.extract import extract_entries  # noqa: E402
from cosyinstall.streams import hash_file  # noqa: E402
from cosyinstall.zipread import ArtifactReader  # noqa: E402
from cosyinstall.zipwrite import Member, write_artifact  # noqa: E402


def make_tree(root: Path, total_mb: int) -> list[Member]:
    members = []
    chunk = os.urandom(1024 * 1024)
    big = max(1, total_mb // 4)
    for i in range(4):
        path = root / ("model-%d.bin" % i)
        with path.open("wb") as out:
            for _ in range(big):
                out.write(chunk)
    for i in range(200):
        (root / ("conf-%03d.json" % i)).write_text('{"layer": %d, "hidden": 896}\n' % i * 50)
    for path in sorted(root.iterdir()):
        members.append(Member("m/" + path.name, str(path), path.stat().st_size))
    return members


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def row(name: str, ours: float, theirs: float, baseline: str) -> None:
    print("%-8s cosy-offline %7.2fs   %-14s %7.2fs   ratio %.2fx" % (name, ours, baseline, theirs, ours / theirs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="size of the weights in MB")
    args = parser.parse_args()
    for tool in ("zip", "unzip"):
        if not shutil.which(tool):
            sys.exit("%s is not installed (apt-get install %s)" % (tool, tool))
    with tempfile.TemporaryDirectory(prefix="bench-artifact-") as tmp:
        work = Path(tmp)
        src = work / "m"
        src.mkdir()
        members = make_tree(src, args.mb)
        ours_zip, their_zip = work / "ours.zip", work / "theirs.zip"
        t_ours = timed(lambda: write_artifact(str(ours_zip), "models", "bench", {}, members))
        t_zip = timed(lambda: subprocess.run(["zip", "-qr", "-n", ".bin", str(their_zip), "m"], cwd=work, check=True))
        row("pack", t_ours, t_zip, "zip -r -n .bin")
        dest_ours, dest_unzip = work / "x-ours", work / "x-unzip"
        def extract() -> None:
            with ArtifactReader(str(ours_zip)) as reader:
                extract_entries(reader, reader.manifest.files, str(dest_ours))
        t_ours = timed(extract)
        t_unzip = timed(lambda: subprocess.run(["unzip", "-q", str(their_zip), "-d", str(dest_unzip)], check=True))
        row("extract", t_ours, t_unzip, "unzip -q")
        t_ours = timed(lambda: hash_file(str(ours_zip)))
        t_cat = timed(lambda: subprocess.run("cat %s > /dev/null" % ours_zip, shell=True, check=True))
        row("check", t_ours, t_cat, "cat")


if __name__ == "__main__":
    main()
