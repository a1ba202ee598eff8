"""What is installed in <to>: the manifests and the venv record that completed steps wrote.

The journal (journal.py) says which steps are complete; this module reads and writes what
they recorded about their content, under <to>/.cosyinstall.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from cosyinstall.artifact import APP_PREFIX, ArtifactManifest, FileEntry
from cosyinstall.errors import ArtifactRejected
from cosyinstall.journal import json_bytes, read_json_object, read_small, write_atomic
from cosyinstall.tree import InstallTree

__all__ = [
    "installed_manifest",
    "write_manifest",
    "app_entries",
    "venv_record",
    "write_venv_record",
    "anything_installed",
]


def installed_manifest(tree: InstallTree, kind: str) -> Optional[ArtifactManifest]:
    path = tree.manifest_copy(kind)
    raw = read_small(path)
    if raw is None:
        return None
    try:
        return ArtifactManifest.from_bytes(raw, path)
    except ArtifactRejected:
        return None


def write_manifest(tree: InstallTree, kind: str, manifest: ArtifactManifest) -> None:
    write_atomic(tree.manifest_copy(kind), manifest.to_bytes())


def app_entries(manifest: Optional[ArtifactManifest]) -> List[FileEntry]:
    if manifest is None:
        return []
    return [e for e in manifest.files if e.path.startswith(APP_PREFIX)]


def venv_record(tree: InstallTree) -> Optional[Dict[str, Any]]:
    """What the last complete venv step installed: packages (name, version), python, source."""
    return read_json_object(tree.venv_record)


def write_venv_record(tree: InstallTree, record: Dict[str, Any]) -> None:
    write_atomic(tree.venv_record, json_bytes(record))


def anything_installed(tree: InstallTree) -> bool:
    return any(os.path.exists(path) for path in
               (tree.manifest_copy("packages"), tree.manifest_copy("models"), tree.venv_record))
