"""The bundled CPython: pin a relocatable CPython of the target version through uv's
managed-Python downloads, and keep its archive in the content-addressed cache for pack.

uv knows where relocatable builds live (python-build-standalone) and honours its own
`UV_PYTHON_INSTALL_MIRROR` and `UV_PYTHON_DOWNLOADS_JSON_URL`, so a mirror works without any
setting of ours. uv checks the archive against the sha256 in its downloads list while it
installs; with `UV_PYTHON_CACHE_DIR` pointed at a fresh folder it keeps that very archive,
which is hashed again here, cached by sha256 and pinned with the glibc floor read from the
installed tree's ELF files.
"""

from __future__ import annotations

import json
import tempfile
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from cosyinstall.artifact import PYTHON_PREFIX, BundledPython
from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable
from cosyinstall.preflight import parse_platform
from cosyinstall.streams import hash_file

from cosybuild.cache import Cache
from cosybuild.elfglibc import glibc_floor_of_tree
from cosybuild.uvtool import run_uv

if TYPE_CHECKING:  # pragma: no cover
    from cosyinstall.progress import Reporter
    from cosyinstall.zipwrite import Member

    from cosybuild.profile import Profile

__all__ = ["PythonPin", "target_download", "pin_python", "python_archive", "ARCHIVE_PREFIX", "pin_bundled_python",
           "bundled_python_members"]

# Member prefix of the bundled CPython in offline_packages.zip.
ARCHIVE_PREFIX = PYTHON_PREFIX


@dataclass(frozen=True)
class PythonPin:
    """What the lock records of the bundled CPython. No URL: uv locates it again by key."""

    key: str           # uv's download key, e.g. cpython-3.10.19-linux-x86_64-gnu
    version: str       # 3.10.19
    archive: str       # the archive's file name, e.g. cpython-3.10.19+20251010-x86_64-...-install_only_stripped.tar.gz
    size: int
    sha256: str
    glibc_floor: str   # "2.17": the newest GLIBC_x.y any of its ELF files needs
    libpython: str     # "lib/libpython3.10.so.1.0" under the archive's top folder, "" if static

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PythonPin":
        return cls(str(data["key"]), str(data["version"]), str(data["archive"]), int(data["size"]),
                   str(data["sha256"]), str(data["glibc_floor"]), str(data.get("libpython", "")))

    @property
    def member(self) -> str:
        """Its member name in offline_packages.zip."""
        return ARCHIVE_PREFIX + self.archive


def _uv_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # The builder's uv otherwise never downloads Pythons (uvtool sets that default).
    env = {"UV_PYTHON_DOWNLOADS": "automatic"}
    env.update(extra or {})
    return env


def _libc(platform: str) -> str:
    return "musl" if "musllinux" in platform else "gnu"


def target_download(minor: str, platform: str) -> dict[str, Any]:
    """uv's newest CPython `minor` download for the target platform (an entry of `uv python list`)."""
    machine, _floor = parse_platform(platform)
    proc = run_uv(["python", "list", minor, "--only-downloads", "--all-platforms", "--all-arches",
                   "--output-format", "json"], env=_uv_env())
    if proc.returncode != 0:
        raise EnvironmentUnsuitable("uv python list %s failed: %s" % (minor, proc.stderr.strip().splitlines()[-1:] or "?"),
                                    "check UV_PYTHON_DOWNLOADS_JSON_URL")
    found = [d for d in json.loads(proc.stdout or "[]")
             if d.get("implementation") == "cpython" and d.get("os") == "linux" and d.get("arch") == machine
             and d.get("libc") == _libc(platform) and d.get("variant", "default") == "default"
             and "%(major)d.%(minor)d" % d["version_parts"] == minor]
    if not found:
        raise EnvironmentUnsuitable("uv offers no CPython %s download for %s" % (minor, platform),
                                    "set UV_PYTHON_DOWNLOADS_JSON_URL to a list that has one, or bundle-python = false")
    return max(found, key=lambda d: (d["version_parts"]["major"], d["version_parts"]["minor"], d["version_parts"]["patch"]))


def _archive_name(url: str) -> str:
    return urllib.parse.unquote(url.rstrip("/").rsplit("/", 1)[-1])


def _install(key: str, work: Path) -> tuple[Path, Path]:
    """`uv python install KEY` into work/; (the installed tree, the archive uv downloaded)."""
    install_dir, archive_dir = work / "install", work / "archives"
    archive_dir.mkdir(parents=True)
    proc = run_uv(["python", "install", key, "--install-dir", str(install_dir), "--no-bin", "--reinstall"],
                  env=_uv_env({"UV_PYTHON_CACHE_DIR": str(archive_dir)}))
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise EnvironmentUnsuitable("uv python install %s failed: %s" % (key, lines[-1] if lines else "no output"),
                                    "check the network, UV_PYTHON_INSTALL_MIRROR or UV_PYTHON_DOWNLOADS_JSON_URL")
    archives = [p for p in archive_dir.iterdir() if p.is_file() and ".tar" in p.name]
    trees = [p for p in install_dir.iterdir() if p.is_dir() and not p.is_symlink() and p.name.startswith(key)]
    if len(archives) != 1 or len(trees) != 1:
        raise EnvironmentUnsuitable("uv python install %s left %d archives and %d trees in %s, expected one each"
                                    % (key, len(archives), len(trees), work))
    return trees[0], archives[0]


def pin_python(minor: str, platform: str, cache: Cache) -> PythonPin:
    """Download the target's CPython through uv, cache its archive, and pin it."""
    download = target_download(minor, platform)
    cache.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="python-", dir=str(cache.root)) as tmp:
        tree, archive = _install(download["key"], Path(tmp))
        size, sha256 = hash_file(str(archive))
        cache.put_file(archive, sha256, size)
        floor = glibc_floor_of_tree(str(tree))
        libpython = "lib/libpython%s.so.1.0" % minor
        has_shared = (tree / libpython).is_file()
    return PythonPin(download["key"], download["version"], _archive_name(download["url"]), size, sha256,
                     "%d.%d" % floor if floor else "", libpython if has_shared else "")


def python_archive(pin: PythonPin, cache: Cache) -> Path:
    """The pinned archive from the cache, downloaded again through uv when absent (exit 3 if it changed)."""
    cached = cache.get(pin.sha256, pin.size)
    if cached is not None:
        return cached
    cache.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="python-", dir=str(cache.root)) as tmp:
        _tree, archive = _install(pin.key, Path(tmp))
        try:
            return cache.put_file(archive, pin.sha256, pin.size)
        except ArtifactRejected:
            size, sha256 = hash_file(str(archive))
            raise ArtifactRejected("uv's %s is now %s (%d bytes), not the locked %s (%d bytes)"
                                   % (pin.key, sha256, size, pin.sha256, pin.size), "run cosybuild lock to re-pin it") from None


# -- wiring for lock and pack -----------------------------------------------------------------


def pin_bundled_python(profile: "Profile") -> dict[str, Any]:
    """The lock's `python` entry: the pin when the manifest sets bundle-python, else {}."""
    if not profile.target.bundle_python:
        return {}
    return pin_python(profile.target.python, profile.target.platform, Cache()).to_dict()


def bundled_python_members(profile: "Profile", lock_python: Mapping[str, Any], cache: Cache,
                           reporter: "Reporter") -> tuple[list["Member"], Optional[BundledPython]]:
    """(members, manifest record) that put the pinned CPython into offline_packages.zip."""
    from cosyinstall.zipwrite import Member

    if not profile.target.bundle_python:
        return [], None
    if not lock_python:
        raise ArtifactRejected("%s sets bundle-python but its lock pins no CPython" % profile.path,
                               "run cosybuild lock %s --only packages" % profile.name)
    pin = PythonPin.from_dict(lock_python)
    path = python_archive(pin, cache)
    reporter.info("bundled CPython %s (%s) adds %.1f MB to offline_packages.zip (glibc floor %s)"
                  % (pin.version, pin.archive, pin.size / 1e6, pin.glibc_floor or "none"))
    record = BundledPython.from_json({"member": pin.member, "version": pin.version, "glibc_floor": pin.glibc_floor,
                                      "libpython": pin.libpython, "key": pin.key}, "the lock's python pin")
    return [Member(pin.member, str(path), pin.size, pin.sha256)], record
