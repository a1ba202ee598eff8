"""`cosybuild pack`: lock check -> fetch -> plan members -> write artifacts, pyz and SHA256SUMS."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cosyinstall.bundle import MODELS_ZIP, PACKAGES_ZIP, PYZ_NAME
from cosyinstall.errors import ArtifactRejected, UsageError
from cosyinstall.progress import Reporter
from cosyinstall.streams import hash_file
from cosyinstall.sums import SUMS_NAME, format_sums, read_sums
from cosyinstall.zipwrite import Member, write_artifact

from cosybuild.appsource import export_app
from cosybuild.cache import Cache
from cosybuild.fetch import FetchItem, fetch_all
from cosybuild.lock import Lock
from cosybuild.locking import ensure_lock
from cosybuild.profile import Profile, relative
from cosybuild.pyz import build_pyz
from cosybuild.resolve import LockedFile, locate
from cosybuild.tree import walk_tree

__all__ = ["PackResult", "pack", "fetch_locked", "ONLY"]

ONLY = ("packages", "models")


@dataclass
class PackResult:
    out: Path
    lock_path: Path
    locked_now: bool
    written: list[Path] = field(default_factory=list)


def fetch_locked(profile: Profile, files: list[LockedFile], cache: Cache, reporter: Reporter) -> dict[str, Path]:
    """Locked files by sha256 -> cached path; only files missing from the cache are located and fetched."""
    missing = [f for f in files if cache.get(f.sha256, f.size) is None]
    if missing:
        reporter.info("locating %d of %d locked files on the configured index" % (len(missing), len(files)))
        urls = locate(profile, missing)
        fetch_all([FetchItem(f.filename, f.size, f.sha256, urls[f.filename]) for f in missing], cache, reporter)
    paths = {}
    for f in files:
        path = cache.get(f.sha256, f.size)
        if path is None:  # pragma: no cover - fetch_all raises before this
            raise ArtifactRejected("%s is not in the cache after fetching" % f.filename)
        paths[f.sha256] = path
    return paths


def _extract_uv(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith("/scripts/uv") or n == "uv"]
        if not names:
            raise ArtifactRejected("%s holds no uv binary" % wheel.name)
        with archive.open(names[0]) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
    return dest


def _requirements_txt(files: list[LockedFile], dest: Path) -> Path:
    lines = ["# Offline install: uv pip install --no-index --require-hashes --find-links wheels -r requirements.txt\n"]
    for f in sorted(files, key=lambda f: f.name):
        lines.append("%s==%s --hash=sha256:%s\n" % (f.name, f.version, f.sha256))
    dest.write_text("".join(lines), encoding="utf-8")
    return dest


def _file_member(arcname: str, path: Path, executable: bool = False, sha256: str | None = None) -> Member:
    return Member(arcname, str(path), path.stat().st_size, sha256, executable)


def _target(profile: Profile) -> dict:
    return {"python": profile.target.python, "platform": profile.target.platform}


def _pack_packages(profile: Profile, lock: Lock, cache: Cache, work: Path, out: Path, reporter: Reporter) -> Path:
    sdists = [f for f in lock.packages if not f.is_wheel]
    if sdists:
        raise UsageError("%s %s is locked as an sdist (%s), which this cosybuild cannot turn into a wheel yet"
                         % (sdists[0].name, sdists[0].version, sdists[0].filename),
                         "pin a version that has a wheel for %s" % profile.target.platform)
    uv_file = lock.tools["uv"]
    paths = fetch_locked(profile, lock.packages + [uv_file], cache, reporter)
    members = [Member("wheels/" + f.filename, str(paths[f.sha256]), f.size, f.sha256) for f in lock.packages]
    members.append(_file_member("uv/uv", _extract_uv(paths[uv_file.sha256], work / "uv"), executable=True))
    members.append(_file_member("requirements.txt", _requirements_txt(lock.packages, work / "requirements.txt")))
    app_root = export_app(profile, lock.app, work)
    members += [_file_member("app/" + rel, full, executable) for rel, full, executable in walk_tree(app_root)]
    meta = {
        "app": lock.app,
        "server": profile.server.to_dict(),
        "packages": [{"name": f.name, "version": f.version, "filename": f.filename} for f in lock.packages],
        "uv": {"version": uv_file.version, "filename": uv_file.filename},
        "lock-digest": lock.inputs_digest,
    }
    path = out / PACKAGES_ZIP
    write_artifact(str(path), "packages", profile.name, _target(profile), members, meta, reporter)
    return path


def _pack_models(profile: Profile, lock: Lock, out: Path, reporter: Reporter) -> Path:
    members: list[Member] = []
    for model in profile.models:
        root = relative(profile, model.repo)
        if not root.is_dir():
            raise ArtifactRejected("model %s: %s is not a directory" % (model.name, root))
        files = walk_tree(root, model.include, model.exclude)
        if not files:
            raise ArtifactRejected("model %s: %s holds no files after include/exclude" % (model.name, root))
        members += [_file_member("%s/%s" % (model.name, rel), full, executable) for rel, full, executable in files]
    path = out / MODELS_ZIP
    write_artifact(str(path), "models", profile.name, _target(profile), members, {"models": lock.models}, reporter)
    return path


def _write_sums(out: Path, names: list[str], reporter: Reporter) -> Path:
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
    tmp.write_text(format_sums(items), encoding="utf-8")
    tmp.replace(sums)
    return sums


def pack(profile: Profile, out: Path, reporter: Reporter, only: str | None = None, cache: Cache | None = None) -> PackResult:
    if only is not None and only not in ONLY:
        raise UsageError("--only must be one of %s" % ", ".join(ONLY))
    lock, lock_path, locked_now = ensure_lock(profile)
    if locked_now:
        reporter.info("locked %s: %d packages -> %s" % (profile.name, len(lock.packages), lock_path))
    cache = cache or Cache()
    out.mkdir(parents=True, exist_ok=True)
    result = PackResult(out, lock_path, locked_now)
    with tempfile.TemporaryDirectory(prefix=".cosybuild-", dir=out) as tmp:
        work = Path(tmp)
        if only in (None, "packages"):
            result.written.append(_pack_packages(profile, lock, cache, work, out, reporter))
        if only in (None, "models"):
            result.written.append(_pack_models(profile, lock, out, reporter))
    result.written.append(build_pyz(out / PYZ_NAME))
    result.written.append(_write_sums(out, [p.name for p in result.written], reporter))
    return result
