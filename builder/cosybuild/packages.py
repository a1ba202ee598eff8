"""The package half of a bundle: lock the target's files and turn them into artifact members."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from cosyinstall.errors import ArtifactRejected, UsageError
from cosyinstall.progress import Reporter
from cosyinstall.zipwrite import Member

from cosybuild.cache import Cache
from cosybuild.packageindex import FetchItem, fetch_all
from cosybuild.lockfile import Lock
from cosybuild.profile import Profile
from cosybuild.resolve import LockedFile, choose_file, compile_pylock, locate, locked_file, resolve
from cosybuild.sdists import BuiltWheel, build_sdists
from cosybuild.uvtool import uv_version
from cosybuild.wheelcheck import check_wheels

__all__ = ["lock_packages", "package_members", "fetch_locked", "file_member"]


def file_member(arcname: str, path: Path, executable: bool = False, sha256: str | None = None) -> Member:
    return Member(arcname, str(path), path.stat().st_size, sha256, executable)


def _uv_for_target(profile: Profile) -> LockedFile:
    version = uv_version()
    for pkg in compile_pylock(profile, ["uv==%s" % version], no_deps=True):
        item = choose_file(pkg, profile.target.python, profile.target.platform) if pkg.get("wheels") else None
        if pkg.get("name") == "uv" and item is not None:
            return locked_file(pkg, item)
    raise UsageError("uv %s has no wheel for %s" % (version, profile.target.platform),
                     "install a uv release that ships wheels for the target")


def lock_packages(profile: Profile) -> tuple[list[LockedFile], dict[str, LockedFile]]:
    """(packages, tools) for the profile's target; tools holds the target's uv."""
    return resolve(profile, profile.packages.requirements), {"uv": _uv_for_target(profile)}


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


def _requirements_txt(pins: list[tuple[str, str, str]], dest: Path) -> Path:
    lines = ["# Offline install: uv pip install --no-index --require-hashes --find-links wheels -r requirements.txt\n"]
    for name, version, sha256 in sorted(pins):
        lines.append("%s==%s --hash=sha256:%s\n" % (name, version, sha256))
    dest.write_text("".join(lines), encoding="utf-8")
    return dest


def _built_meta(b: BuiltWheel) -> dict:
    return {"name": b.sdist.name, "version": b.sdist.version, "filename": b.filename, "sha256": b.sha256,
            "built-from": {"filename": b.sdist.filename, "size": b.sdist.size, "sha256": b.sdist.sha256}}


def package_members(profile: Profile, lock: Lock, cache: Cache, work: Path, reporter: Reporter) -> tuple[list[Member], dict]:
    """Members wheels/*, uv/uv and requirements.txt, plus the manifest metadata describing them.

    Locked sdists are built into wheels here; requirements.txt pins the built wheel's sha256,
    so the box installs everything with --require-hashes and never builds.
    """
    uv_file = lock.tools["uv"]
    paths = fetch_locked(profile, lock.packages + [uv_file], cache, reporter)
    wheels = [f for f in lock.packages if f.is_wheel]
    built = build_sdists(profile, [f for f in lock.packages if not f.is_wheel], paths, cache, work / "sdists", reporter)
    check_wheels([(paths[f.sha256], f.sha256) for f in wheels + [uv_file]] + [(b.path, b.sha256) for b in built], cache.root / "wheelchecks")
    members = [Member("wheels/" + f.filename, str(paths[f.sha256]), f.size, f.sha256) for f in wheels]
    members += [Member("wheels/" + b.filename, str(b.path), b.size, b.sha256) for b in built]
    members.append(file_member("uv/uv", _extract_uv(paths[uv_file.sha256], work / "uv"), executable=True))
    pins = [(f.name, f.version, f.sha256) for f in wheels] + [(b.sdist.name, b.sdist.version, b.sha256) for b in built]
    members.append(file_member("requirements.txt", _requirements_txt(pins, work / "requirements.txt")))
    listed = [{"name": f.name, "version": f.version, "filename": f.filename} for f in wheels] + [_built_meta(b) for b in built]
    meta = {
        "packages": sorted(listed, key=lambda p: p["name"]),
        "uv": {"version": uv_file.version, "filename": uv_file.filename},
    }
    return members, meta
