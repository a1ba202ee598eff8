"""Which CPython builds the venv: a pure decision over what the box has and what the bundle carries.

Order: `--python PATH`; else a CPython of the target version already on the box that satisfies
the manifest (with `shared-libpython`, one whose own sysconfig names a libpython3.X.so.1.0
that exists); else the CPython bundled in offline_packages.zip (`[target] bundle-python`),
provided the box's glibc is not older than the bundle's floor. The outcome is one preflight
row saying which interpreter and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple

from cosyinstall.artifact import BundledPython
from cosyinstall.preflight import Finding
from cosyinstall.probe import PythonFound

__all__ = ["BundledPython", "Choice", "bundled_from_meta", "choose", "META_KEY", "SHARED_KEY", "libpython_name"]

# The packages MANIFEST.json key describing the bundled CPython, and the target key asking
# for a shared libpython.
META_KEY = BundledPython.KEY
SHARED_KEY = "shared-libpython"


@dataclass(frozen=True)
class Choice:
    """The interpreter chosen: a box one (`python`) or the bundled one (`bundled`), and the row."""

    finding: Finding
    python: Optional[PythonFound] = None
    bundled: Optional[BundledPython] = None
    libdir: Optional[str] = None           # where its libpython lies, for a box interpreter


def libpython_name(minor: str) -> str:
    return "libpython%s.so.1.0" % minor


def bundled_from_meta(meta: Mapping[str, Any], where: str = "offline_packages.zip MANIFEST.json") -> Optional[BundledPython]:
    """The bundled CPython described in a packages manifest's meta, or None."""
    raw = meta.get(BundledPython.KEY)
    return None if raw is None else BundledPython.from_json(raw, "%s.%s" % (where, BundledPython.KEY))


def _dotted(version: Tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _box_has(pythons: List[PythonFound]) -> str:
    minors = sorted({p.minor for p in pythons if p.implementation == "CPython"}, key=lambda m: tuple(map(int, m.split("."))))
    if not minors:
        return "this box has no CPython"
    return "this box has %s only" % ", ".join(minors)


def _use_bundled(bundled: BundledPython, glibc: Optional[Tuple[int, int]], why: str) -> Choice:
    floor = bundled.glibc_floor
    if floor is not None and (glibc is None or glibc < floor):
        have = "no glibc" if glibc is None else "glibc %d.%d" % glibc
        return Choice(Finding(
            "python", False,
            "the bundled CPython %s needs glibc %d.%d or newer, but this box has %s (%s)" % (bundled.version, floor[0], floor[1], have, why),
            hint="use an image with glibc %d.%d or newer, or install CPython %s and pass it with --python"
                 % (floor[0], floor[1], bundled.minor)))
    return Choice(Finding("python", True, "bundled CPython %s: %s" % (bundled.version, why)), bundled=bundled)


def choose(
    pythons: List[PythonFound],
    minor: Optional[str],
    asked: Optional[str] = None,
    shared: bool = False,
    bundled: Optional[BundledPython] = None,
    glibc: Optional[Tuple[int, int]] = None,
    libdirs: Optional[Mapping[str, Optional[str]]] = None,
    skipped: str = "",
) -> Choice:
    """The interpreter for the venv, or a failed row saying why there is none.

    `pythons` are the interpreters that ran (only the asked one with --python); `libdirs` maps
    an interpreter's path to the directory holding its libpython3.X.so.1.0 (None: it has none);
    `skipped` is a note on candidates that did not run.
    """
    libdirs = libdirs or {}
    wanted = "CPython %s" % minor if minor else "a CPython 3"
    lib = libpython_name(minor) if minor else "libpython3.X.so.1.0"

    def fits(p: PythonFound) -> bool:
        if p.implementation != "CPython":
            return False
        return p.minor == minor if minor else p.version[:2] >= (3, 8)

    if asked:
        got = pythons[0] if pythons else None
        if got is None or not fits(got):
            what = "does not run" if got is None else "is %s %s" % (got.implementation, got.minor)
            return Choice(Finding("python", False, "--python %s %s, but the bundle needs %s" % (asked, what, wanted),
                                  hint="pass --python with a %s interpreter" % wanted))
        if shared and not libdirs.get(got.path):
            return Choice(Finding("python", False,
                                  "--python %s has no %s (built without --enable-shared), which the manifest's shared-libpython needs"
                                  % (asked, lib),
                                  hint="pass a CPython built with a shared libpython" + (", or leave out --python to use the bundled one" if bundled else "")))
        return Choice(Finding("python", True, "CPython %s at %s (--python)%s" % (_dotted(got.version), got.path, _libnote(shared, libdirs.get(got.path)))),
                      python=got, libdir=libdirs.get(got.path))
    matching = [p for p in pythons if fits(p)]
    usable = [p for p in matching if libdirs.get(p.path)] if shared else matching
    if usable:
        got = usable[0]
        return Choice(Finding("python", True, "CPython %s at %s%s%s" % (_dotted(got.version), got.path, _libnote(shared, libdirs.get(got.path)), skipped)),
                      python=got, libdir=libdirs.get(got.path))
    if matching:
        why = "%s at %s has no %s" % (matching[0].minor, matching[0].path, lib)
    else:
        why = _box_has(pythons)
    if bundled is not None:
        return _use_bundled(bundled, glibc, why)
    seen = ", ".join("%s %s" % (p.path, p.minor) for p in pythons) or "none that run"
    if matching:
        return Choice(Finding("python", False, "no %s with %s on this box (found: %s)%s" % (wanted, lib, seen, skipped),
                              hint="pack with [target] bundle-python = true, or pass a CPython built with a shared libpython with --python"))
    return Choice(Finding("python", False, "no %s found on this box (found: %s)%s" % (wanted, seen, skipped),
                          hint="pack with [target] bundle-python = true, or install %s and pass it with --python" % wanted))


def _libnote(shared: bool, libdir: Optional[str]) -> str:
    return " (libpython in %s)" % libdir if shared and libdir else ""

