"""A file and a folder of the same name: refused when an artifact is opened, never met while writing.

`a` as a file and `a/b` as another member cannot both be laid out; found at open time this is
one sentence naming both (exit 3) instead of an error half-way through extraction. Names
are compared as a case-insensitive disk would see them, like the duplicate check.
"""

from __future__ import annotations

from typing import Iterable

from cosyinstall.errors import ArtifactRejected
from cosyinstall.names import fold

__all__ = ["check_no_clash"]


def check_no_clash(paths: Iterable[str], where: str) -> None:
    """Raise ArtifactRejected if one path is a file and a folder of another (member names, '/'-separated)."""
    # With '/' as NUL (the lowest character, and never in a checked name), sorting puts every
    # path under `a` right after `a` itself: one pass over neighbours, one string per member.
    keys = sorted((fold(p).replace("/", "\x00"), p) for p in paths)
    for i in range(1, len(keys)):
        (key, path), (after, other) = keys[i - 1], keys[i]
        if after.startswith(key + "\x00"):
            raise ArtifactRejected("%s holds %s as a file and as the folder of %s" % (where, path, other))
