"""The uploaded bundle in --from: which artifacts are there, and are they what SHA256SUMS says.

A full hash of a multi-GB zip is costly, so a verified file's (size, mtime, inode) is
remembered; an unchanged file is not hashed again on the next run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import NullReporter, Reporter
from cosyinstall.streams import hash_file
from cosyinstall.sums import SUMS_NAME, SumEntry, read_sums
from cosyinstall.zipread import ArtifactReader

__all__ = ["PACKAGES_ZIP", "MODELS_ZIP", "PYZ_NAME", "Upload", "find_uploads", "verify_uploads", "stat_key"]

PACKAGES_ZIP = "offline_packages.zip"
MODELS_ZIP = "pretrained_models.zip"
PYZ_NAME = "cosyinstall.pyz"
KIND_OF = {PACKAGES_ZIP: "packages", MODELS_ZIP: "models"}


@dataclass
class Upload:
    name: str
    path: str
    expected: SumEntry


def stat_key(path: str) -> List[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def find_uploads(from_dir: str) -> Dict[str, Upload]:
    """Read SHA256SUMS and check presence and sizes: cheap checks that catch most bad uploads."""
    if not os.path.isdir(from_dir):
        raise ArtifactRejected("%s is not a directory" % from_dir, "pass the folder holding the uploads with --from")
    sums = read_sums(from_dir)
    if not any(name in sums for name in KIND_OF):
        raise ArtifactRejected(
            "%s lists neither %s nor %s" % (os.path.join(from_dir, SUMS_NAME), PACKAGES_ZIP, MODELS_ZIP)
        )
    uploads: Dict[str, Upload] = {}
    for name, entry in sorted(sums.items()):
        path = os.path.join(from_dir, name)
        if not os.path.isfile(path):
            if name == PYZ_NAME:
                continue
            raise ArtifactRejected("%s is missing" % path, "upload it next to %s" % SUMS_NAME)
        size = os.path.getsize(path)
        if entry.size is not None and size != entry.size:
            verb = "truncated" if size < entry.size else "larger than expected"
            raise ArtifactRejected(
                "%s is %s: %d bytes on disk, %d expected" % (path, verb, size, entry.size),
                "upload it again (rsync --partial resumes an interrupted upload)",
            )
        uploads[name] = Upload(name, path, entry)
    return uploads


def verify_uploads(
    uploads: Dict[str, Upload], verified: Dict[str, Any], reporter: Optional[Reporter] = None
) -> Dict[str, Any]:
    """Hash each upload against SHA256SUMS; returns the new verified-cache entries.

    On a mismatch in a zip, the members are checked to name the damaged one.
    """
    reporter = reporter or NullReporter()
    cache: Dict[str, Any] = {}
    for name, upload in sorted(uploads.items()):
        key = stat_key(upload.path)
        known = verified.get(name)
        if isinstance(known, dict) and known.get("stat") == key and known.get("sha256") == upload.expected.sha256:
            cache[name] = known
            continue
        with reporter.task("checking %s" % name, key[0]) as task:
            _size, digest = hash_file(upload.path, task.advance)
        if digest != upload.expected.sha256:
            raise ArtifactRejected(_mismatch_sentence(upload), "upload it again")
        cache[name] = {"stat": key, "sha256": digest}
    return cache


def _mismatch_sentence(upload: Upload) -> str:
    base = "%s does not match %s" % (upload.path, SUMS_NAME)
    if upload.name not in KIND_OF:
        return base
    try:
        with ArtifactReader(upload.path) as reader:
            damage = reader.find_corrupt_member()
    except ArtifactRejected as exc:
        return "%s: %s" % (base, exc.message)
    if damage:
        return "%s: %s" % (base, damage)
    return "%s, although every member is intact (the zip's own records are damaged)" % base
