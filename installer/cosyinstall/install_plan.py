"""Pure planning of an apply: step digests, which files to write, keep or remove.

No I/O here: what a file on disk looks like comes in through small callables, so every rule
is unit-tested without a zip or a disk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from cosyinstall.artifact import APP_PREFIX, ArtifactManifest, FileEntry

__all__ = [
    "STEPS",
    "Item",
    "FilePlan",
    "app_items",
    "venv_items",
    "model_items",
    "step_digest",
    "plan_files",
    "installed_map",
    "dropped_packages",
    "canonical_name",
]

STEPS = ("app", "venv", "models")


@dataclass(frozen=True)
class Item:
    """One file to install: member `key` of a zip goes to `rel` under the step's root."""

    key: str
    rel: str
    size: int
    sha256: Optional[str]  # None for a hand-made zip: known only once extracted
    executable: bool = False


@dataclass
class FilePlan:
    write: List[Item] = field(default_factory=list)
    keep: List[Item] = field(default_factory=list)
    remove: List[str] = field(default_factory=list)

    @property
    def write_bytes(self) -> int:
        return sum(i.size for i in self.write)


def canonical_name(name: str) -> str:
    """PEP 503 normalisation, so 'Foo_Bar' in a lock and 'foo-bar' in a venv are one package."""
    out = []
    dash = False
    for ch in name.lower():
        if ch in "-_.":
            if not dash:
                out.append("-")
            dash = True
        else:
            out.append(ch)
            dash = False
    return "".join(out)


def _item(entry: FileEntry, strip: str = "") -> Item:
    return Item(entry.path, entry.path[len(strip):], entry.size, entry.sha256, entry.executable)


def app_items(manifest: Optional[ArtifactManifest]) -> List[Item]:
    if manifest is None:
        return []
    return [_item(e, APP_PREFIX) for e in manifest.files if e.path.startswith(APP_PREFIX)]


def venv_items(manifest: ArtifactManifest) -> List[Item]:
    """Wheels, requirements.txt and the uv binary: what the venv step needs staged."""
    return [_item(e) for e in manifest.files if not e.path.startswith(APP_PREFIX)]


def model_items(manifest: Optional[ArtifactManifest]) -> List[Item]:
    return [_item(e) for e in manifest.files] if manifest is not None else []


def _digest(payload: Any) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def step_digest(step: str, manifest: ArtifactManifest) -> str:
    """What the journal records for a step: the part of the manifest that step installs.

    Keyed per step, so a new offline_packages.zip whose wheels did not change does not
    rebuild the venv, and one whose app did not change does not touch the app.
    """
    if step == "models":
        return manifest.digest()
    if step == "app":
        files = [asdict(i) for i in app_items(manifest)]
        return _digest({"step": "app", "files": files})
    files = [asdict(i) for i in venv_items(manifest)]
    return _digest({"step": "venv", "target": manifest.target, "files": files,
                    "packages": manifest.meta.get("packages")})


def installed_map(items: Iterable[Item]) -> Dict[str, Tuple[Optional[str], bool]]:
    return {i.rel: (i.sha256, i.executable) for i in items}


def plan_files(
    items: List[Item],
    installed: Dict[str, Tuple[Optional[str], bool]],
    size_on_disk: Callable[[str], Optional[int]],
    hash_on_disk: Callable[[str], Optional[str]],
    interrupted: bool,
    old_paths: Iterable[str] = (),
) -> FilePlan:
    """Decide per file: write it, keep it (already right), or remove it (no longer listed).

    Normally the installed manifest says what a file holds, so a file is kept when that
    manifest and the new one agree and its size on disk is right. After an interrupted run
    of this step the manifest cannot be trusted (some files may already be new), so the file
    on disk is hashed instead. `old_paths` are every path an earlier run may have written:
    the installed manifest's and those of interrupted runs.
    """
    plan = FilePlan()
    for item in items:
        size = size_on_disk(item.rel)
        if item.sha256 is None or size is None or size != item.size:
            plan.write.append(item)
        elif not interrupted:
            before = installed.get(item.rel)
            same = before is not None and before[0] == item.sha256
            (plan.keep if same else plan.write).append(item)
        else:
            (plan.keep if hash_on_disk(item.rel) == item.sha256 else plan.write).append(item)
    wanted = {i.rel for i in items}
    plan.remove = sorted(set(old_paths) - wanted)
    return plan


def dropped_packages(before: Iterable[Dict[str, Any]], after: Iterable[Dict[str, Any]]) -> List[str]:
    """Packages the venv holds from the previous bundle that the new one no longer lists."""
    keep = {canonical_name(str(p.get("name", ""))) for p in after}
    gone = {canonical_name(str(p.get("name", ""))) for p in before} - keep
    return sorted(n for n in gone if n)
