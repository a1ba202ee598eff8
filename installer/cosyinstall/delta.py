"""Pure decisions of a delta apply: which members must already be on the box, and are they.

A delta artifact lists every member of its bundle but stores only those its base lacked;
the rest (its `on-box` members) are found on the box by sha256: in the installed tree, where
the recorded manifests say each file is, or in the base bundle kept beside the uploads. No
I/O here: where each content can be found comes in as `Location`s (delta_source.py builds
them), so the same decision runs against whichever installed tree is current.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from cosyinstall.artifact import APP_PREFIX, ArtifactManifest, FileEntry

__all__ = ["Location", "expected_on_box", "missing", "index", "missing_sentence"]


@dataclass(frozen=True)
class Location:
    """Where one content may be: a file (`member` None) or a member of the zip at `path`."""

    sha256: str
    size: int
    path: str
    member: Optional[str] = None


def _step(entry_path: str, kind: str) -> str:
    if kind == "models":
        return "models"
    return "app" if entry_path.startswith(APP_PREFIX) else "venv"


def expected_on_box(manifest: ArtifactManifest, steps: Iterable[str]) -> List[FileEntry]:
    """The delta's members that the given steps will read from the box rather than the zip."""
    record = manifest.delta()
    if record is None:
        return []
    wanted = set(steps)
    on_box = set(record.on_box)
    return [e for e in manifest.files if e.path in on_box and _step(e.path, manifest.kind) in wanted]


def index(locations: Iterable[Location]) -> Dict[str, List[Location]]:
    """sha256 -> where that content is, in the order given (the first is tried first)."""
    out: Dict[str, List[Location]] = {}
    for loc in locations:
        out.setdefault(loc.sha256, []).append(loc)
    return out


def missing(expected: Iterable[FileEntry], available: Mapping[str, Sequence[Location]]) -> List[FileEntry]:
    """The expected members for which no location holds content of that sha256 and size."""
    return [e for e in expected if not any(loc.size == e.size for loc in available.get(e.sha256, ()))]


def missing_sentence(label: str, root: str, absent: List[FileEntry]) -> str:
    more = " and %d more" % (len(absent) - 1) if len(absent) > 1 else ""
    first = absent[0]
    return ("%s is a delta, but %s does not hold %s (sha256 %s…)%s, which it expects on the box: "
            "the full bundle is needed" % (label, root, first.path, first.sha256[:12], more))
