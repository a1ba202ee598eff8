"""What is installed in <to>: the manifests and the venv record written by completed steps."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from cosyinstall.artifact import ArtifactManifest, FileEntry
from cosyinstall.errors import ArtifactRejected
from cosyinstall.journal import StateDir
from cosyinstall.plan import APP_PREFIX

__all__ = [
    "APP_PREFIX",
    "MODELS_DIR",
    "VENV_DIR",
    "installed_manifest",
    "write_manifest",
    "app_entries",
    "app_paths",
    "model_paths",
    "venv_dir",
    "venv_record",
    "write_venv_record",
    "uv_path",
    "anything_installed",
]

MODELS_DIR = "pretrained_models"
VENV_DIR = ".venv"
VENV_RECORD = "venv.json"


def installed_manifest(state: StateDir, kind: str) -> Optional[ArtifactManifest]:
    raw = state.read_bytes("%s.MANIFEST.json" % kind)
    if raw is None:
        return None
    try:
        return ArtifactManifest.from_bytes(raw, state.path("%s.MANIFEST.json" % kind))
    except ArtifactRejected:
        return None


def write_manifest(state: StateDir, kind: str, manifest: ArtifactManifest) -> None:
    state.write_json("%s.MANIFEST.json" % kind, manifest.to_bytes())


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


def uv_path(state: StateDir) -> str:
    """Where the bundled uv is kept after an install, for later steps (models) and users."""
    return state.path("bin", "uv")


def venv_record(state: StateDir) -> Optional[Dict[str, Any]]:
    """What the last complete venv step installed: packages (name, version), python, source."""
    raw = state.read_bytes(VENV_RECORD)
    if raw is None:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_venv_record(state: StateDir, record: Dict[str, Any]) -> None:
    state.write_json(VENV_RECORD, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def anything_installed(state: StateDir) -> bool:
    return any(state.read_bytes(name) is not None
               for name in ("packages.MANIFEST.json", "models.MANIFEST.json", VENV_RECORD))
