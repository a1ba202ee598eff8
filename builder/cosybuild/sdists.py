"""sdist-only packages become wheels at build time, never on the offline box.

Each locked sdist is built with `uv build --wheel` in an isolated environment whose build
requirements come from the manifest's index. Pure-Python sdists build anywhere; native ones
need this machine to be linux on the target's CPU with the target's CPython, which is found
at run time. Built wheels are cached by sdist sha256 and target, so packing again builds
nothing.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cosyinstall.errors import EnvironmentUnsuitable
from cosyinstall.progress import Reporter
from cosyinstall.streams import hash_file

from cosybuild.cache import Cache
from cosybuild.profile import Profile
from cosybuild.resolve import LockedFile
from cosybuild.targetpython import ENV_VAR, find_target_python
from cosybuild.targettags import glibc_floor, target_tags, wheel_rank
from cosybuild.uvtool import index_args, run_uv

__all__ = ["BuiltWheel", "build_sdists", "max_glibc"]

# Fixed timestamps inside built wheels (setuptools/wheel honour it): same sdist, same bytes.
SOURCE_DATE_EPOCH = "315532800"
_GLIBC = re.compile(rb"GLIBC_(\d+)\.(\d+)")


@dataclass(frozen=True)
class BuiltWheel:
    """A wheel built here from a locked sdist; its sha256 goes into the artifact, not the lock."""

    sdist: LockedFile
    filename: str
    path: Path
    size: int
    sha256: str


def max_glibc(wheel: Path) -> tuple[int, int] | None:
    """The newest GLIBC_x.y symbol version any shared object in the wheel asks for."""
    best: tuple[int, int] | None = None
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if not re.search(r"\.so(\.|$)", info.filename):
                continue
            tail = b""
            with archive.open(info) as member:
                for chunk in iter(lambda: member.read(1024 * 1024), b""):
                    # Keep a short tail so a name split across two chunks is still seen.
                    data = tail + chunk
                    for major, minor in _GLIBC.findall(data):
                        version = (int(major), int(minor))
                        best = version if best is None or version > best else best
                    tail = data[-32:]
    return best


def _can_build_native(profile: Profile, python: str | None) -> bool:
    floor = glibc_floor(profile.target.platform)
    return (python is not None and floor is not None and sys.platform.startswith("linux")
            and platform.machine().lower() in (floor[0], "amd64" if floor[0] == "x86_64" else floor[0]))


def _cache_dir(cache: Cache, sdist: LockedFile, profile: Profile) -> Path:
    key = "%s-cp%s-%s" % (sdist.sha256, profile.target.python.replace(".", ""), profile.target.platform)
    return cache.root / "built" / key


def _cached(directory: Path) -> BuiltWheel | None:
    """A wheel built earlier, if its recorded size and sha256 still hold."""
    record = directory / "wheel.sha256"
    try:
        digest, size, filename = record.read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return None
    path = directory / filename
    try:
        if path.stat().st_size != int(size) or hash_file(str(path))[1] != digest:
            return None
    except OSError:
        return None
    return BuiltWheel(LockedFile("", "", "", 0, ""), filename, path, int(size), digest)


def _store(directory: Path, wheel: Path) -> tuple[Path, int, str]:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / wheel.name
    os.replace(wheel, final)
    size, digest = hash_file(str(final))
    tmp = directory / "wheel.sha256.tmp"
    tmp.write_text("%s %d %s\n" % (digest, size, final.name), encoding="utf-8")
    os.replace(tmp, directory / "wheel.sha256")
    return final, size, digest


def _run_build(profile: Profile, sdist: LockedFile, source: Path, python: str, out: Path, log: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    # uv reads name and version from the file name, so the cached blob gets its real one.
    named = out.parent / sdist.filename
    if not named.exists():
        os.symlink(source, named)
    args = ["build", "--wheel", "--no-config", "--python", python, "--out-dir", str(out), *index_args(profile), str(named)]
    proc = run_uv(args, cwd=profile.base_dir, env={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "UV_NO_PROGRESS": "1"})
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    wheels = sorted(out.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        last = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-2:]
        raise EnvironmentUnsuitable("building %s %s from %s failed: %s" % (sdist.name, sdist.version, sdist.filename,
                                                                           " / ".join(last) or "uv gave no output"),
                                    "see the build log %s" % log)
    return wheels[0]


def _check_target(profile: Profile, sdist: LockedFile, wheel: Path, native_ok: bool) -> None:
    tags = target_tags(profile.target.python, profile.target.platform, local_build=native_ok)
    target = "CPython %s on %s" % (profile.target.python, profile.target.platform)
    if wheel_rank(wheel.name, tags) is None:
        floor = glibc_floor(profile.target.platform)
        raise EnvironmentUnsuitable(
            "%s %s has only an sdist with native code, and this machine built %s, which does not run on %s"
            % (sdist.name, sdist.version, wheel.name, target),
            "run cosybuild pack on linux %s with CPython %s installed (pyenv install %s, or set %s), or pin a version "
            "that has a wheel" % (floor[0] if floor else "on the target's CPU", profile.target.python,
                                  profile.target.python, ENV_VAR))
    floor = glibc_floor(profile.target.platform)
    needs = max_glibc(wheel)
    if floor is not None and needs is not None and needs > floor[1]:
        raise EnvironmentUnsuitable(
            "%s %s built here needs glibc %d.%d, newer than the %d.%d of %s" % (sdist.name, sdist.version, *needs, *floor[1], target),
            "build on a machine with an older glibc (e.g. the target's distribution), or raise [target].platform")


def build_sdists(profile: Profile, sdists: list[LockedFile], paths: dict[str, Path], cache: Cache, work: Path,
                 reporter: Reporter) -> list[BuiltWheel]:
    """A target wheel for every locked sdist, built here or taken from the build cache."""
    built: list[BuiltWheel] = []
    python: str | None = None
    searched = False
    for sdist in sorted(sdists, key=lambda f: f.name):
        directory = _cache_dir(cache, sdist, profile)
        hit = _cached(directory)
        if hit is not None:
            built.append(BuiltWheel(sdist, hit.filename, hit.path, hit.size, hit.sha256))
            continue
        if not searched:
            python, searched = find_target_python(profile.target.python), True
            if python is None:
                reporter.info("no CPython %s found here; building pure-Python sdists with %s" % (profile.target.python, sys.executable))
        native_ok = _can_build_native(profile, python)
        reporter.info("building %s %s from %s" % (sdist.name, sdist.version, sdist.filename))
        wheel = _run_build(profile, sdist, paths[sdist.sha256], python or sys.executable, work / sdist.sha256 / "out",
                           cache.root / "built" / "logs" / ("%s-%s.log" % (sdist.name, sdist.version)))
        _check_target(profile, sdist, wheel, native_ok)
        final, size, digest = _store(directory, wheel)
        built.append(BuiltWheel(sdist, final.name, final, size, digest))
    return built

