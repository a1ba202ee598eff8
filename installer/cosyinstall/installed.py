"""What is installed in <to>: the manifests recorded by the last complete steps."""

from __future__ import annotations

import os
from typing import List, Optional

from cosyinstall.artifact import ArtifactManifest, FileEntry
from cosyinstall.errors import ArtifactRejected
from cosyinstall.journal import StateDir

__all__ = ["APP_PREFIX", "installed_manifest", "app_entries", "app_paths", "model_paths", "MODELS_DIR", "VENV_DIR"]

APP_PREFIX = "app/"
MODELS_DIR = "pretrained_models"
VENV_DIR = ".venv"


def installed_manifest(state: StateDir, kind: str) -> Optional[ArtifactManifest]:
    raw = state.read_bytes("%s.MANIFEST.json" % kind)
    if raw is None:
        return None
    try:
        return ArtifactManifest.from_bytes(raw, state.path("%s.MANIFEST.json" % kind))
    except ArtifactRejected:
        return None


def app_entries(manifest: Optional[ArtifactManifest]) -> List[FileEntry]:
    if manifest is None:
        return []
    return [e for e in manifest.files if e.path.startswith(APP_PREFIX)]


def app_paths(manifest: Optional[ArtifactManifest]) -> List[str]:
    return [e.path[len(APP_PREFIX):] for e in app_entries(manifest)]


def model_paths(manifest: Optional[ArtifactManifest]) -> List[str]:
    return [e.path for e in manifest.files] if manifest is not None else []


def venv_dir(to: str) -> str:
    return os.path.join(os.path.abspath(to), VENV_DIR)
