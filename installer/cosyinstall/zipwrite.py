"""Deterministic artifact writer: sorted members, fixed times and modes, ZIP64, MANIFEST.json.

Used only by cosybuild, but kept here because the format is owned by the installer side.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from dataclasses import dataclass
from typing import AbstractSet, Any, Dict, Iterable, List, Optional, Tuple

from cosyinstall.artifact import DELTA_FORMAT, FORMAT, MANIFEST_NAME, ArtifactManifest, DeltaBase, FileEntry
from cosyinstall.boundedjson import JsonRefused, loads_bounded
from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.streams import copy_verified

__all__ = ["Member", "DeltaSpec", "write_artifact", "STORED_SUFFIXES", "should_store"]

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Already-compressed or incompressible payloads: deflating them costs time and saves nothing.
STORED_SUFFIXES = (
    ".whl", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".safetensors", ".onnx",
    ".pt", ".pth", ".bin", ".ckpt", ".npz", ".engine", ".plan", ".jpg", ".jpeg", ".png",
    ".mp3", ".ogg", ".flac", ".gguf",
)


def should_store(path: str) -> bool:
    return path.lower().endswith(STORED_SUFFIXES)


@dataclass(frozen=True)
class Member:
    """One file to write: where it comes from on disk and what it must hash to."""

    arcname: str
    source: str
    size: int
    sha256: Optional[str] = None
    executable: bool = False


@dataclass(frozen=True)
class DeltaSpec:
    """Write a delta: members whose sha256 is in `known` (the base bundle's) are listed, not stored."""

    base: Dict[str, str]
    known: AbstractSet[str]


def _digest_of(member: Member) -> str:
    with open(member.source, "rb") as src:
        return copy_verified(src, None, member.size, member.sha256, member.source)


def _zipinfo(name: str, size: int, executable: bool, store: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.create_system = 3
    mode = 0o755 if executable else 0o644
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_STORED if store else zipfile.ZIP_DEFLATED
    # Set before open('w') so zipfile decides on ZIP64 headers from the real size.
    info.file_size = size
    return info


_FIRST = ("uv/", "python/", "requirements.txt")


def member_order(arcname: str, size: int) -> Tuple[int, int, str]:
    """Where a member goes in the zip: what the venv needs before any wheel, then wheels largest first, then the rest.

    The installer reads the zip in file order and hands uv each wheel as it lands
    (venv_feed.py): uv can start only once its binary (and the bundled CPython) is read, and
    the largest wheels, which keep uv busy longest, then start while the rest is still read.
    """
    if arcname.startswith(_FIRST):
        return (0, 0, arcname)
    if arcname.startswith("wheels/"):
        return (1, -size, arcname)
    return (2, 0, arcname)


def write_artifact(
    out_path: str,
    kind: str,
    name: str,
    target: Dict[str, Any],
    members: Iterable[Member],
    meta: Optional[Dict[str, Any]] = None,
    reporter: Optional[Reporter] = None,
    delta: Optional[DeltaSpec] = None,
) -> ArtifactManifest:
    """Write `out_path` atomically (temp file in the same directory, then rename).

    Each source is read once: hashed while it is copied, and checked against `sha256` when
    the member already has one (a cached wheel), so a changed file never enters silently.
    With `delta`, a member whose content the base bundle holds is hashed (checked) and listed
    in the manifest's delta record instead of being stored.
    """
    reporter = reporter or NullReporter()
    ordered: List[Member] = sorted(members, key=lambda m: member_order(m.arcname, m.size))
    # Validate names before any byte is written; hashes are filled in while copying.
    placeholders = tuple(FileEntry(m.arcname, m.size, "0" * 64) for m in ordered)
    ArtifactManifest(kind, name, dict(target), placeholders).validate(out_path)
    # The box reads MANIFEST.json within bounds (size, values, depth): refuse here what it would refuse there.
    try:
        loads_bounded(ArtifactManifest(kind, name, dict(target), placeholders, dict(meta or {})).to_bytes())
    except JsonRefused as exc:
        raise ArtifactRejected("the MANIFEST.json of %s would be refused by cosyinstall: %s" % (out_path, exc)) from None
    entries: List[FileEntry] = []
    on_box: List[str] = []
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".%s.%s.part" % (os.path.basename(out_path), uuid.uuid4().hex[:12]))
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
            with reporter.task("writing %s" % os.path.basename(out_path), sum(m.size for m in ordered)) as task:
                for member in ordered:
                    if delta is not None:
                        digest = _digest_of(member)
                        if digest in delta.known:
                            entries.append(FileEntry(member.arcname, member.size, digest, member.executable))
                            on_box.append(member.arcname)
                            task.advance(member.size)
                            continue
                        member = Member(member.arcname, member.source, member.size, digest, member.executable)
                    info = _zipinfo(member.arcname, member.size, member.executable, should_store(member.arcname))
                    with open(member.source, "rb") as src, archive.open(info, "w", force_zip64=member.size > 0x7FFFFFFF) as dst:
                        digest = copy_verified(src, dst, member.size, member.sha256, member.source, task.advance)
                    entries.append(FileEntry(member.arcname, member.size, digest, member.executable))
            full_meta = dict(meta or {})
            if delta is not None:
                full_meta[DeltaBase.KEY] = DeltaBase(dict(delta.base), tuple(on_box)).to_json()
            entries.sort(key=lambda e: e.path)  # the manifest lists by name, whatever the order in the zip
            manifest = ArtifactManifest(kind, name, dict(target), tuple(entries), full_meta,
                                        FORMAT if delta is None else DELTA_FORMAT)
            # Last member, so the manifest carries hashes computed during the single copy pass.
            manifest_bytes = manifest.to_bytes()
            archive.writestr(_zipinfo(MANIFEST_NAME, len(manifest_bytes), False, False), manifest_bytes)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return manifest
