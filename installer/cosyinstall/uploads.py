"""The uploaded bundle in --from: which artifacts are there, and are they what SHA256SUMS says.

A full hash of a multi-GB zip is costly, so a verified file's (size, mtime, inode) is
remembered; an unchanged file is not hashed again on the next run. SHA256SUMS may be
missing (hand-made uploads): the zips are then checked only by their own contents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from cosyinstall.artifact import KIND_OF, MODELS_ZIP, PACKAGES_ZIP, PYZ_NAME, SUMS_NAME
from cosyinstall.errors import ArtifactRejected
from cosyinstall.handmade import HandmadeReader
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.streams import hash_file
from cosyinstall.sums import SumEntry, read_sums
from cosyinstall.zipread import ArtifactReader, has_manifest, open_zip

__all__ = [
    "Upload",
    "Reader",
    "scan_uploads",
    "find_uploads",
    "verify_uploads",
    "verify_upload",
    "open_reader",
    "stat_key",
    "is_verified",
    "mismatch_sentence",
]

Reader = Union[ArtifactReader, HandmadeReader]


@dataclass
class Upload:
    name: str
    path: str
    expected: Optional[SumEntry]  # None: not covered by SHA256SUMS (or there is none)


def stat_key(path: str) -> List[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def scan_uploads(from_dir: str) -> Tuple[Dict[str, Upload], Dict[str, ArtifactRejected], bool]:
    """(uploads, problem per file name, whether SHA256SUMS exists); presence and sizes only.

    A zip listed in SHA256SUMS but missing, or of the wrong size, is a problem; a zip present
    but not listed is taken as unverified. The size check catches most broken uploads at once.
    """
    if not os.path.isdir(from_dir):
        raise ArtifactRejected("%s is not a directory" % from_dir, "pass the folder holding the uploads with --from")
    has_sums = os.path.isfile(os.path.join(from_dir, SUMS_NAME))
    sums = read_sums(from_dir) if has_sums else {}
    uploads: Dict[str, Upload] = {}
    problems: Dict[str, ArtifactRejected] = {}
    for name, entry in sorted(sums.items()):
        path = os.path.join(from_dir, name)
        if not os.path.isfile(path):
            if name == PYZ_NAME:
                continue
            problems[name] = ArtifactRejected("%s is missing" % path, "upload it next to %s" % SUMS_NAME)
            continue
        size = os.path.getsize(path)
        if entry.size is not None and size != entry.size:
            verb = "truncated" if size < entry.size else "larger than expected"
            problems[name] = ArtifactRejected(
                "%s is %s: %d bytes on disk, %d expected" % (path, verb, size, entry.size),
                "upload it again (rsync --partial resumes an interrupted upload)",
            )
            continue
        uploads[name] = Upload(name, path, entry)
    for name in KIND_OF:
        path = os.path.join(from_dir, name)
        if name not in sums and os.path.isfile(path):
            uploads[name] = Upload(name, path, None)
    if not any(name in uploads or name in problems for name in KIND_OF):
        raise ArtifactRejected(
            "%s holds neither %s nor %s" % (from_dir, PACKAGES_ZIP, MODELS_ZIP),
            "upload them (with %s) or pass their folder with --from" % SUMS_NAME,
        )
    return uploads, problems, has_sums


def find_uploads(from_dir: str, require_sums: bool = True) -> Dict[str, Upload]:
    """scan_uploads for callers that stop at the first problem (cosybuild verify)."""
    if require_sums and not os.path.isfile(os.path.join(from_dir, SUMS_NAME)) and os.path.isdir(from_dir):
        raise ArtifactRejected("%s is missing" % os.path.join(from_dir, SUMS_NAME), "upload it next to the zips")
    uploads, problems, _has_sums = scan_uploads(from_dir)
    for name in sorted(problems):
        raise problems[name]
    return uploads


def verify_upload(upload: Upload, verified: Dict[str, Any], reporter: Optional[Reporter] = None) -> Optional[Dict[str, Any]]:
    """Hash one upload against SHA256SUMS; returns its verified-cache entry (None if unlisted).

    On a mismatch in a zip, the members are checked to name the damaged one.
    """
    reporter = reporter or NullReporter()
    if upload.expected is None:
        return None
    key = stat_key(upload.path)
    if is_verified(upload, verified):
        return verified[upload.name]
    with reporter.task("checking %s" % upload.name, key[0]) as task:
        _size, digest = hash_file(upload.path, task.advance)
    if digest != upload.expected.sha256:
        raise ArtifactRejected(_mismatch_sentence(upload), "upload it again")
    return {"stat": key, "sha256": digest}


def verify_uploads(
    uploads: Dict[str, Upload], verified: Dict[str, Any], reporter: Optional[Reporter] = None
) -> Dict[str, Any]:
    """Hash each upload against SHA256SUMS; returns the new verified-cache entries."""
    cache: Dict[str, Any] = {}
    for name, upload in sorted(uploads.items()):
        entry = verify_upload(upload, verified, reporter)
        if entry is not None:
            cache[name] = entry
    return cache


def is_verified(upload: Upload, verified: Dict[str, Any]) -> bool:
    """Whether this very file (size, mtime, inode) was hashed against the same SHA256SUMS line before."""
    known = verified.get(upload.name)
    return (upload.expected is not None and isinstance(known, dict) and known.get("stat") == stat_key(upload.path)
            and known.get("sha256") == upload.expected.sha256)


def open_reader(upload: Upload) -> Reader:
    """A built artifact (with MANIFEST.json) or, without one, a hand-made zip."""
    kind = KIND_OF[upload.name]
    archive = open_zip(upload.path)
    try:
        if has_manifest(archive):
            return ArtifactReader(upload.path, kind, archive)
    except BaseException:
        archive.close()
        raise
    return HandmadeReader(upload.path, kind, archive)


def mismatch_sentence(upload: Upload) -> str:
    return _mismatch_sentence(upload)


def _mismatch_sentence(upload: Upload) -> str:
    base = "%s does not match %s" % (upload.path, SUMS_NAME)
    if upload.name not in KIND_OF:
        return base
    try:
        reader = open_reader(upload)
    except ArtifactRejected as exc:
        return "%s: %s" % (base, exc.message)
    try:
        damage = reader.find_corrupt_member()
    finally:
        reader.close()
    if damage:
        return "%s: %s" % (base, damage)
    return "%s, although every member is intact (the zip's own records are damaged)" % base
