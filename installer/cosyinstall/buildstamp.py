"""The build stamp SHA256SUMS carries: manifest name, build sequence and build id.

They are comment lines, so `sha256sum -c` still works, and they are covered by the signature
in SHA256SUMS.sig like every other byte of the file:

    # build-name demo
    # build-sequence 7
    # build-id 3f2a...

The sequence only goes up for a given manifest name (the builder keeps it); every artifact
of the build carries the same id in its MANIFEST.json, so artifacts of two builds cannot be
mixed under one signed SHA256SUMS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional

from cosyinstall.errors import ArtifactRejected

__all__ = ["BuildStamp", "format_stamp", "parse_stamp"]

_LINE = re.compile(r"^# build-(name|sequence|id) (\S.*)$")
_ID = re.compile(r"^[0-9a-f]{16,64}$")


@dataclass(frozen=True)
class BuildStamp:
    name: str
    sequence: int
    build_id: str


def format_stamp(stamp: BuildStamp) -> str:
    return "# build-name %s\n# build-sequence %d\n# build-id %s\n" % (stamp.name, stamp.sequence, stamp.build_id)


def parse_stamp(text: str, where: str) -> Optional[BuildStamp]:
    """The stamp in a SHA256SUMS text; None when it has none; rejected when partial or repeated."""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line.rstrip("\r"))
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key in found:
            raise ArtifactRejected("%s has two build-%s lines" % (where, key))
        found[key] = value
    if not found:
        return None
    missing = [k for k in ("name", "sequence", "id") if k not in found]
    if missing:
        raise ArtifactRejected("%s has no build-%s line" % (where, missing[0]))
    if not found["sequence"].isdigit() or len(found["sequence"]) > 18:
        raise ArtifactRejected("%s has build-sequence %r, not a whole number" % (where, found["sequence"][:40]))
    if not _ID.match(found["id"]):
        raise ArtifactRejected("%s has build-id %r, not 16 to 64 lowercase hex digits" % (where, found["id"][:80]))
    return BuildStamp(found["name"], int(found["sequence"]), found["id"])
