"""`cosybuild pack`: lock check -> fetch -> plan members -> write artifacts, pyz and SHA256SUMS."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from cosyinstall.artifact import BUILD_ID_KEY, MODELS_ZIP, PACKAGES_ZIP, PYZ_NAME, SUMS_NAME, AppRecord, PackagesMeta
from cosyinstall.buildstamp import BuildStamp, format_stamp
from cosyinstall.errors import ArtifactRejected, UsageError
from cosyinstall.progress import Reporter
from cosyinstall.streams import hash_file
from cosyinstall.sums import format_sums, read_sums
from cosyinstall.zipwrite import DeltaSpec, write_artifact

from cosybuild.appsource import export_app
from cosybuild.buildseq import next_stamp, remember
from cosybuild.cache import Cache
from cosybuild.lockfile import Lock
from cosybuild.lockcmd import ensure_lock, sections_for
from cosybuild.models import model_members
from cosybuild.packages import file_member, package_members
from cosybuild.profile import Profile
from cosybuild.pythonbundle import bundled_python_members
from cosybuild.pyz import build_pyz
from cosybuild.deltabase import read_base
from cosybuild.signing import drop_stale_signature, sign_sums
from cosybuild.signedset import check_one_build
from cosybuild.dirwalk import walk_tree

__all__ = ["PackResult", "pack", "ONLY"]

ONLY = ("packages", "models")


@dataclass
class PackResult:
    out: Path
    lock_path: Path
    locked_now: list[str]
    written: list[Path] = field(default_factory=list)
    stamp: BuildStamp | None = None


def _target(profile: Profile) -> dict:
    target: dict[str, str | bool] = {"python": profile.target.python, "platform": profile.target.platform}
    if profile.target.shared_libpython:
        target["shared-libpython"] = True  # the installer asks the interpreter for its libpython
    if profile.target.gpu is not None:
        target["gpu"] = profile.target.gpu.to_json()  # the installer's GPU preflight
    return target


def _pack_packages(profile: Profile, lock: Lock, cache: Cache, work: Path, out: Path, reporter: Reporter,
                   build_id: str, delta: DeltaSpec | None = None) -> Path:
    members, meta = package_members(profile, lock, cache, work, reporter)
    app_root = export_app(profile, lock.app, work)
    members += [file_member("app/" + rel, full, executable) for rel, full, executable in walk_tree(app_root)]
    python_members, python = bundled_python_members(profile, lock.python, cache, reporter)
    members += python_members
    typed = replace(PackagesMeta.from_json(meta, PACKAGES_ZIP), app=AppRecord.from_json(lock.app, "the lock's app"),
                    server=profile.server, lock_digests=dict(lock.digests), python=python)
    path = out / PACKAGES_ZIP
    meta = dict(typed.to_json(), **{BUILD_ID_KEY: build_id})
    write_artifact(str(path), "packages", profile.name, _target(profile), members, meta, reporter, delta)
    return path


def _pack_models(profile: Profile, lock: Lock, cache: Cache, work: Path, out: Path, reporter: Reporter,
                 build_id: str, delta: DeltaSpec | None = None) -> Path:
    members, meta = model_members(profile, lock, cache, work, reporter)
    meta = dict(meta, **{BUILD_ID_KEY: build_id})
    path = out / MODELS_ZIP
    write_artifact(str(path), "models", profile.name, _target(profile), members, meta, reporter, delta)
    return path


def _write_sums(out: Path, names: list[str], reporter: Reporter, stamp: BuildStamp) -> Path:
    known = {}
    try:
        known = read_sums(str(out))
    except ArtifactRejected:
        pass
    items = []
    for name in sorted(set(names) | {n for n in known if (out / n).is_file()}):
        path = out / name
        size = path.stat().st_size
        if name in names:
            with reporter.task("hashing %s" % name, size) as task:
                _size, digest = hash_file(str(path), task.advance)
        else:
            digest = known[name].sha256  # untouched by this pack (--only), keep its line
        items.append((name, digest, size))
    sums = out / SUMS_NAME
    tmp = out / (SUMS_NAME + ".tmp")
    tmp.write_text(format_stamp(stamp) + format_sums(items), encoding="utf-8")
    tmp.replace(sums)
    return sums


def pack(profile: Profile, out: Path, reporter: Reporter, only: str | None = None, cache: Cache | None = None,
         since: Path | None = None, sign: str | None = None, sequence: int | None = None) -> PackResult:
    """Write the artifacts; with `since` (an old dist), delta artifacts holding only what it lacks.

    `sign` signs SHA256SUMS with that SSH key; `sequence` sets the build sequence.
    """
    if only is not None and only not in ONLY:
        raise UsageError("--only must be one of %s" % ", ".join(ONLY))
    delta = None
    if since is not None:
        if since.resolve() == out.resolve():
            raise UsageError("--since %s is the output folder; write the delta into another --out" % since)
        delta = read_base(since, reporter).spec()
    lock, lock_path, locked_now = ensure_lock(profile, sections_for(only))
    if locked_now:
        reporter.info("locked %s (%s) -> %s" % (profile.name, ", ".join(locked_now), lock_path))
    cache = cache or Cache()
    out.mkdir(parents=True, exist_ok=True)
    result = PackResult(out, lock_path, locked_now)
    stamp = result.stamp = next_stamp(profile.name, profile.path, lock_path, sequence)
    with tempfile.TemporaryDirectory(prefix=".cosybuild-", dir=out) as tmp:
        work = Path(tmp)
        (work / "models").mkdir()
        if only in (None, "packages"):
            result.written.append(_pack_packages(profile, lock, cache, work, out, reporter, stamp.build_id, delta))
        if only in (None, "models"):
            result.written.append(_pack_models(profile, lock, cache, work / "models", out, reporter, stamp.build_id, delta))
    result.written.append(build_pyz(out / PYZ_NAME))
    sums = _write_sums(out, [p.name for p in result.written], reporter, stamp)
    result.written.append(sums)
    if sign is not None:
        check_one_build(out, stamp)  # an artifact kept by --only from another build would be refused on the box
        result.written.append(sign_sums(sums, sign))
    else:
        drop_stale_signature(sums)
    remember(stamp, profile.path, lock_path)
    return result
