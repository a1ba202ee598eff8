"""Hand-made zips (no MANIFEST.json): safe names, the user document's layout, a target guessed from wheels.

Such a zip carries no hashes, so nothing in it can be verified beyond each member's CRC-32;
apply accepts it with a loud warning. Names get the same safety rules as a built artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from cosyinstall.errors import ArtifactRejected
from cosyinstall.nameclash import check_no_clash
from cosyinstall.names import check_member_mode, check_member_name, fold, legacy_name
from cosyinstall.tree import MODELS_NAME
from cosyinstall.zipraw import check_readable
from cosyinstall.zipread import ZipReader, checked

__all__ = [
    "HandmadeReader",
    "Member",
    "infer_target",
    "wheel_name_version",
    "UV_BINARY",
]

UV_BINARY = "uv"
# Folders that archivers add and that are never part of what the user zipped.
_JUNK_TOP = ("__MACOSX",)
_DOS_DIRECTORY = 0x10
_UNIX = 3
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class Member:
    """One regular file of a hand-made zip, under its repaired, checked name."""

    name: str
    info: zipfile.ZipInfo
    size: int
    crc: int
    executable: bool


def wheel_name_version(filename: str) -> Optional[Tuple[str, str]]:
    match = _WHEEL.match(filename)
    return (match.group("name"), match.group("version")) if match else None


def _platform_floor(tag: str) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """'manylinux_2_17_x86_64' -> ('x86_64', (2, 17)); 'linux_x86_64' -> ('x86_64', None)."""
    match = _MANYLINUX.match(tag)
    if match:
        return match.group(3), (int(match.group(1)), int(match.group(2)))
    for legacy, floor in _LEGACY_MANYLINUX.items():
        if tag.startswith(legacy + "_"):
            return tag[len(legacy) + 1:], floor
    if tag.startswith("linux_"):
        return tag[len("linux_"):], None
    return None, None


def infer_target(wheel_files: List[str]) -> Dict[str, Any]:
    """What the wheels need: CPython minor (from cpXY tags), machine and glibc floor.

    A wheel with several platform tags runs where any of them does, so it needs the lowest
    glibc among its tags; the set needs the highest of those. Wheels for another OS are
    listed so preflight can name them.
    """
    minors: Dict[str, int] = {}
    machines: Dict[str, int] = {}
    floor: Optional[Tuple[int, int]] = None
    foreign: List[str] = []
    for filename in wheel_files:
        match = _WHEEL.match(os.path.basename(filename))
        if not match:
            continue
        for py in match.group("py").split("."):
            if re.match(r"^cp3\d+$", py) and match.group("abi") != "abi3":
                minor = "3.%s" % py[3:]
                minors[minor] = minors.get(minor, 0) + 1
        plats = match.group("plat").split(".")
        if plats == ["any"]:
            continue
        wheel_floor: Optional[Tuple[int, int]] = None
        linux = False
        for plat in plats:
            machine, need = _platform_floor(plat)
            if machine is None:
                continue
            linux = True
            machines[machine] = machines.get(machine, 0) + 1
            if need is not None and (wheel_floor is None or need < wheel_floor):
                wheel_floor = need
        if not linux:
            foreign.append(os.path.basename(filename))
        elif wheel_floor is not None and (floor is None or wheel_floor > floor):
            floor = wheel_floor
    target: Dict[str, Any] = {}
    if minors:
        target["python"] = max(minors, key=lambda m: minors[m])
    machine = max(machines, key=lambda m: machines[m]) if machines else None
    if machine and floor:
        target["platform"] = "%s-manylinux_%d_%d" % (machine, floor[0], floor[1])
    elif machine:
        target["platform"] = "%s-unknown-linux-gnu" % machine
    if foreign:
        target["foreign-wheels"] = sorted(foreign)
    return target


class HandmadeReader(ZipReader):
    """A zip without MANIFEST.json: checked names, readable methods, no duplicates."""

    handmade = True

    def __init__(self, path: str, kind: str, archive: object) -> None:
        self.path = path
        self.label = os.path.basename(path)
        self.kind = kind
        self.zip = checked(path, archive)
        try:
            self.members = self._scan()
        except BaseException:
            self.zip.close()
            raise
        self.by_name = {m.name: m for m in self.members}

    def _scan(self) -> List[Member]:
        members: List[Member] = []
        seen: Dict[str, str] = {}
        for info in self.zip.infolist():
            name = legacy_name(info)
            unix = info.create_system == _UNIX
            top = name.split("/")[0]
            directory = name.endswith("/") or (info.create_system != _UNIX and info.external_attr & _DOS_DIRECTORY)
            if directory:
                check_member_name(name.rstrip("/"), self.label)
                check_member_mode(name, info.external_attr, self.label, directory=True, unix=unix)
                continue
            check_member_name(name, self.label)
            check_member_mode(name, info.external_attr, self.label, unix=unix)
            if top in _JUNK_TOP:
                continue
            key = fold(name)
            if key in seen:
                raise ArtifactRejected("%s holds the member %s twice" % (self.path, name))
            seen[key] = name
            check_readable(info, self.path)
            mode = (info.external_attr >> 16) & 0o777 if info.create_system == _UNIX else 0
            members.append(Member(name, info, info.file_size, info.CRC, bool(mode & 0o111)))
        if not members:
            raise ArtifactRejected("%s holds no files" % self.path)
        check_no_clash((m.name for m in members), self.path)
        return sorted(members, key=lambda m: m.name)

    def listing_digest(self, step: str) -> str:
        """Identity of the zip's content for the journal: names, sizes and CRCs of every member."""
        rows = [[m.name, m.size, m.crc, m.executable] for m in self.members]
        raw = json.dumps({"step": step, "handmade": rows}, sort_keys=True).encode("utf-8")
        return hashlib.sha256(raw).hexdigest()

    # -- layouts, as the user's deploy script unpacks these zips ------------------------

    def model_files(self) -> List[Tuple[Member, str]]:
        """(member, path under pretrained_models/): a top folder named pretrained_models is dropped."""
        strip = ""
        tops = {m.name.split("/")[0] for m in self.members}
        if tops == {MODELS_NAME} and all("/" in m.name for m in self.members):
            strip = MODELS_NAME + "/"
        return [(m, m.name[len(strip):]) for m in self.members]

    def wheels(self) -> List[Member]:
        return [m for m in self.members if m.name.lower().endswith(".whl")]

    def requirements(self) -> Optional[Member]:
        """requirements.txt at the top, or in the single top folder the user zipped."""
        tops = {m.name.split("/")[0] for m in self.members}
        candidates = ["requirements.txt"]
        if len(tops) == 1:
            candidates.append("%s/requirements.txt" % tops.pop())
        for name in candidates:
            if name in self.by_name:
                return self.by_name[name]
        return None

    def uv_binary(self) -> Optional[Member]:
        found = [m for m in self.members if m.name.split("/")[-1] == UV_BINARY]
        return found[0] if found else None

    def target(self) -> Dict[str, Any]:
        return infer_target([m.name for m in self.wheels()])

    def _info(self, key: str) -> zipfile.ZipInfo:
        return self.by_name[key].info

    def _checked_members(self) -> Iterable[Tuple[str, int, Optional[str]]]:
        # No hashes to compare: size and CRC-32 are the only checks a hand-made zip allows.
        return ((m.name, m.size, None) for m in self.members)
