"""Measure delta bundles: one package changed in a real packages artifact, one file changed in a model.

    python bench/delta_size.py --dist DIST [--package tqdm==4.67.1] [--work DIR]

Packages: DIST is a packed dist (offline_packages.zip with its SHA256SUMS, e.g. what
bench/real_scale.sh writes). The "new" bundle is the old one repacked with one wheel replaced
by another version of that package (downloaded with pip for the target), its requirements.txt
line and its manifest record updated: the same change a re-pinned lock makes. The delta is
written `--since` DIST by the same writer `cosybuild pack --since` uses, and its size is
compared with that wheel plus the metadata (MANIFEST.json and requirements.txt).

Models: a synthetic local model of several files is packed with `cosybuild pack --only models`,
one file is changed, and `cosybuild pack --only models --since` the first pack; the delta is
compared with the changed file. Both bars: the delta within 5% of its payload.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "installer"))
sys.path.insert(0, str(REPO / "builder"))

from cosyinstall.artifact import PACKAGES_ZIP, ArtifactManifest  # noqa: E402
from cosyinstall.progress import human_bytes  # noqa: E402
from cosyinstall.sums import read_sums  # noqa: E402
from cosyinstall.zipread import ArtifactReader  # noqa: E402
from cosyinstall.zipwrite import DeltaSpec, Member, write_artifact  # noqa: E402

MB = 1 << 20
BAR = 1.05


def _download(spec: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                    "--python-version", "3.10", "--platform", "manylinux2014_x86_64", "-d", str(dest), spec],
                   check=True)
    wheels = list(dest.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _sha256(path: Path) -> str:
    from cosyinstall.streams import hash_file

    return hash_file(str(path))[1]


def packages(dist: Path, spec: str, work: Path) -> bool:
    name, version = spec.split("==")
    old_zip = dist / PACKAGES_ZIP
    sums = read_sums(str(dist))
    started = time.monotonic()
    members_dir = work / "members"
    with ArtifactReader(str(old_zip), "packages") as reader:
        old: ArtifactManifest = reader.manifest
        for entry in old.files:
            target = members_dir / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                reader.copy_member(entry, out)
    print("extracted %d members of %s (%s) in %.0f s" % (len(old.files), old_zip, human_bytes(old_zip.stat().st_size),
                                                          time.monotonic() - started))
    meta = dict(old.meta)
    record = next(p for p in meta["packages"] if p["name"] == name)
    wheel = _download(spec, work / "download")
    digest = _sha256(wheel)
    old_wheel = "wheels/" + record["filename"]
    files = {e.path: e for e in old.files}
    del files[old_wheel]
    (members_dir / old_wheel).unlink()
    new_wheel = "wheels/" + wheel.name
    shutil.copyfile(wheel, members_dir / new_wheel)
    requirements = members_dir / "requirements.txt"
    lines = requirements.read_text().splitlines(True)
    lines = ["%s==%s --hash=sha256:%s\n" % (name, version, digest) if line.startswith(name + "==") else line
             for line in lines]
    requirements.write_text("".join(lines))
    meta["packages"] = [dict(p, version=version, filename=wheel.name, sha256=digest) if p["name"] == name else p
                        for p in meta["packages"]]
    members = [Member(p, str(members_dir / p), (members_dir / p).stat().st_size, None, e.executable)
               for p, e in files.items()]
    members.append(Member(new_wheel, str(members_dir / new_wheel), wheel.stat().st_size))
    spec_ = DeltaSpec({PACKAGES_ZIP: sums[PACKAGES_ZIP].sha256}, frozenset(e.sha256 for e in old.files))
    out = work / "delta" / PACKAGES_ZIP
    started = time.monotonic()
    manifest = write_artifact(str(out), "packages", old.name, dict(old.target), members, meta, None, spec_)
    took = time.monotonic() - started
    delta_size = out.stat().st_size
    payload = wheel.stat().st_size
    metadata = len(manifest.to_bytes()) + requirements.stat().st_size
    ratio = delta_size / float(payload + metadata)
    print("packages: %s -> %s: delta %s (%d bytes) written in %.0f s; wheel %d + MANIFEST.json %d + requirements.txt "
          "%d = %d bytes; ratio %.3f (bar %.2f); full artifact %s, %.4f%% of it"
          % (record["filename"], wheel.name, human_bytes(delta_size), delta_size, took, payload,
             len(manifest.to_bytes()), requirements.stat().st_size, payload + metadata, ratio, BAR,
             human_bytes(old_zip.stat().st_size), 100.0 * delta_size / old_zip.stat().st_size))
    return ratio <= BAR


MODEL_MANIFEST = """
name = "deltabench"
[target]
python = "3.10"
platform = "x86_64-manylinux_2_28"
[packages]
requirements = ["six==1.16.0"]  # not packed: --only models
[app]
path = "app"
[[models]]
name = "synthetic"
source = "local"
repo = "model"
[server]
command = ["python", "server.py"]
"""


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, MB))
            out.write(block)
            left -= len(block)


def _pack(project: Path, out: Path, *extra: str) -> None:
    env = dict(os.environ, COSYBUILD_CACHE=str(project / "cache"))
    proc = subprocess.run([sys.executable, "-m", "cosybuild", "pack", str(project / "bench.toml"), "--only", "models",
                           "--out", str(out), *extra], capture_output=True, text=True, env=env,
                          cwd=str(REPO))
    if proc.returncode != 0:
        sys.exit(proc.stderr)


def models(work: Path, files: int, size_mb: int) -> bool:
    project = work / "models-project"
    (project / "app").mkdir(parents=True)
    (project / "app" / "server.py").write_text("print('ready')\n")
    model = project / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"sample_rate": 24000}))
    for i in range(files):
        _random_file(model / ("part-%d.pt" % i), size_mb * MB)
    (project / "bench.toml").write_text(MODEL_MANIFEST)
    _pack(project, work / "m1")
    _random_file(model / "part-0.pt", size_mb * MB)  # one file changes
    started = time.monotonic()
    _pack(project, work / "m2", "--since", str(work / "m1"))
    took = time.monotonic() - started
    delta = (work / "m2" / "pretrained_models.zip").stat().st_size
    full = (work / "m1" / "pretrained_models.zip").stat().st_size
    changed = size_mb * MB
    ratio = delta / float(changed)
    print("models: %d files of %d MiB, one changed: delta %s (%d bytes) packed in %.1f s; changed file %d bytes; "
          "ratio %.4f (bar %.2f); full artifact %s" % (files, size_mb, human_bytes(delta), delta, took, changed, ratio,
                                                      BAR, human_bytes(full)))
    return ratio <= BAR


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, help="a packed dist with offline_packages.zip (skip packages without it)")
    parser.add_argument("--package", default="tqdm==4.67.1", help="the new pin of one package in that set")
    parser.add_argument("--model-files", type=int, default=6)
    parser.add_argument("--model-file-mb", type=int, default=64)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="delta-bench-"))
    ok = True
    try:
        if args.dist is not None:
            ok = packages(args.dist, args.package, work / "packages") and ok
        ok = models(work, args.model_files, args.model_file_mb) and ok
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("all within the bar" if ok else "OVER THE BAR")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
