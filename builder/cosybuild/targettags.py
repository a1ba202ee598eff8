"""Wheel tags the target accepts, best first, computed for a foreign CPython and platform."""

from __future__ import annotations

import re
from functools import lru_cache

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

# The one table of the older manylinux names (PEP 600), kept by the installer, which reads them too.
from cosyinstall.preflight import _LEGACY_MANYLINUX

__all__ = ["target_platforms", "target_tags", "wheel_rank", "glibc_floor"]

_MANYLINUX = re.compile(r"^([a-z0-9_]+)-manylinux_(\d+)_(\d+)$")
# glibc floor -> the older name, which wheels still carry.
_LEGACY = {floor: name for name, floor in _LEGACY_MANYLINUX.items()}


def glibc_floor(platform: str) -> tuple[str, tuple[int, int]] | None:
    """'x86_64-manylinux_2_28' -> ('x86_64', (2, 28)); None for platforms without a glibc floor."""
    match = _MANYLINUX.match(platform)
    if not match:
        return None
    return match.group(1), (int(match.group(2)), int(match.group(3)))


def target_platforms(platform: str, local_build: bool = False) -> list[str]:
    """Platform tags, most specific first; `local_build` adds linux_<arch> for wheels built here."""
    floor = glibc_floor(platform)
    if floor is None:
        return []
    arch, (major, minor) = floor
    out = []
    for m in range(minor, 4, -1):
        out.append("manylinux_%d_%d_%s" % (major, m, arch))
        if (major, m) in _LEGACY:
            out.append("%s_%s" % (_LEGACY[(major, m)], arch))
    if local_build:
        out.insert(0, "linux_%s" % arch)
    return out


@lru_cache(maxsize=8)
def target_tags(python: str, platform: str, local_build: bool = False) -> tuple[Tag, ...]:
    """Every tag a CPython `python` on `platform` installs, in packaging's order of preference."""
    version = tuple(int(p) for p in python.split(".")[:2])
    plats = target_platforms(platform, local_build)
    if not plats:
        return ()
    interp = "cp%d%d" % version
    return tuple(cpython_tags(version, [interp, "abi3", "none"], plats)) + tuple(compatible_tags(version, interp, plats))


@lru_cache(maxsize=8)
def _positions(tags: tuple[Tag, ...]) -> dict[Tag, int]:
    return {tag: i for i, tag in reversed(list(enumerate(tags)))}


def wheel_rank(filename: str, tags: tuple[Tag, ...]) -> int | None:
    """Position of the wheel's best tag in `tags` (lower is better); None if none is accepted."""
    try:
        _name, _version, _build, wheel_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    positions = _positions(tags)
    ranks = [positions[t] for t in wheel_tags if t in positions]
    return min(ranks) if ranks else None
