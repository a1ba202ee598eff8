"""Before signing: every artifact the new SHA256SUMS lists must belong to this build.

`pack --only` keeps the other artifact from an earlier pack; when that pack was another build
(other inputs or sequence), signing the set would bind two builds together, which the box
refuses. Saying so here is cheaper than an upload.
"""

from __future__ import annotations

from pathlib import Path

from cosyinstall.artifact import KIND_OF
from cosyinstall.buildstamp import BuildStamp
from cosyinstall.errors import ArtifactRejected
from cosyinstall.zipread import ArtifactReader

__all__ = ["check_one_build"]


def check_one_build(out: Path, stamp: BuildStamp) -> None:
    for name, kind in sorted(KIND_OF.items()):
        path = out / name
        if not path.is_file():
            continue
        with ArtifactReader(str(path), kind) as reader:
            found = reader.manifest.build_id()
        if found != stamp.build_id:
            raise ArtifactRejected("%s is from build %s, not this build %s (%s %d), so it cannot be signed with it"
                                   % (path, (found or "none")[:16], stamp.build_id[:16], stamp.name, stamp.sequence),
                                   "pack without --only so every artifact is from this build")
