"""The venv checked against the lock after uv: every locked wheel really installed, byte for byte.

uv keeps an installed distribution whose name and version match, so a wheel rebuilt with the
same version would silently stay the old one. For every locked wheel, its RECORD (the sha256 of
each file it installs into site-packages) must equal the RECORD lines of the installed
distribution; `.data/` members (scripts get new shebangs, headers and data go elsewhere) and
the files an installer writes itself (RECORD, INSTALLER, REQUESTED, direct_url.json,
uv_cache.json) are left out. Only RECORDs are read, never the installed files, so the check
costs milliseconds even for a venv of several GB; `cosyinstall verify` hashes files.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import zipfile
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from cosyinstall.artifact import PackageRecord
from cosyinstall.install_plan import canonical_name
from cosyinstall.tree import InstallTree

__all__ = ["mismatched", "wheel_record", "installed_record"]

_WRITTEN_BY_INSTALLER = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json")


def _rows(lines: Iterable[str]) -> Iterator[Tuple[str, str]]:
    for row in csv.reader(lines):
        if len(row) >= 2 and row[1]:
            yield row[0], row[1]


def _skipped(path: str) -> bool:
    first, _, rest = path.partition("/")
    if first.endswith(".data"):
        return True
    return first.endswith(".dist-info") and rest in _WRITTEN_BY_INSTALLER


def wheel_record(wheel: str) -> Tuple[Optional[str], Dict[str, str]]:
    """(the wheel's dist-info folder, path -> 'sha256=...') from the RECORD inside a wheel file."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
        if len(names) != 1:
            return None, {}
        with archive.open(names[0]) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            record = {p: h for p, h in _rows(text) if not _skipped(p)}
        return names[0].split("/")[0], record


def installed_record(dist_info: str) -> Dict[str, str]:
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8", newline="") as handle:
            return {p: h for p, h in _rows(handle) if not _skipped(p)}
    except OSError:
        return {}


def _installed(tree: InstallTree) -> Dict[str, Tuple[str, str]]:
    """canonical name -> (version, dist-info folder) in the venv's site-packages."""
    found: Dict[str, Tuple[str, str]] = {}
    for info in glob.glob(os.path.join(tree.venv_lib, "python*", "site-packages", "*.dist-info")):
        name, _, version = os.path.basename(info)[: -len(".dist-info")].rpartition("-")
        found[canonical_name(name)] = (version, info)
    return found


def mismatched(tree: InstallTree, wheels_dir: str, packages: Iterable[PackageRecord]) -> List[Tuple[str, str]]:
    """(package name, why) for every locked wheel the venv does not hold exactly."""
    have = _installed(tree)
    bad: List[Tuple[str, str]] = []
    for pkg in packages:
        if not pkg.filename or not pkg.filename.endswith(".whl"):
            continue
        wheel = os.path.join(wheels_dir, pkg.filename)
        if not os.path.isfile(wheel):
            continue  # not staged: a model wheel or a file this bundle does not carry
        got = have.get(canonical_name(pkg.name))
        if got is None or got[0] != pkg.version:
            bad.append((pkg.name, "%s %s is not installed (found %s)" % (pkg.name, pkg.version,
                                                                        got[0] if got else "none")))
            continue
        try:
            _folder, expected = wheel_record(wheel)
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, csv.Error):
            bad.append((pkg.name, "%s has no readable RECORD" % pkg.filename))
            continue
        installed = installed_record(got[1])
        differ = sorted(p for p, h in expected.items() if installed.get(p) != h)
        if differ:
            bad.append((pkg.name, "%s %s in the venv differs from %s (%d files, first %s)"
                        % (pkg.name, pkg.version, pkg.filename, len(differ), differ[0])))
    return bad
