"""Find a build manifest by name: a path to a .toml file, or NAME looked up in the manifest folders.

The folders, in order: each folder of $COSYBUILD_MANIFESTS (os.pathsep-separated), ./manifests
(the current directory, e.g. a checkout of this repository) and the manifests/ folder of the
source tree cosybuild runs from (an editable install). A non-editable install has no source
tree, so run it from the checkout or set COSYBUILD_MANIFESTS; a manifest's relative paths
(requirements-file, [app] path, local models) are relative to the manifest itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from cosyinstall.errors import UsageError

__all__ = ["ENV_VAR", "manifest_dirs", "find_manifest"]

ENV_VAR = "COSYBUILD_MANIFESTS"
_SOURCE_TREE = Path(__file__).resolve().parents[2] / "manifests"


def manifest_dirs() -> list[Path]:
    """The existing folders searched for NAME.toml, first match wins, without repeats."""
    found: list[Path] = []
    listed = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    for folder in listed + [Path.cwd() / "manifests", _SOURCE_TREE]:
        folder = folder.resolve()
        if folder.is_dir() and folder not in found:
            found.append(folder)
    return found


def find_manifest(spec: str) -> Path:
    """The manifest file `spec` names; exit 2 naming the folders searched and the names found there."""
    if spec.endswith(".toml") or os.sep in spec or "/" in spec:
        candidate = Path(spec)
        if not candidate.is_file():
            raise UsageError("manifest %s does not exist" % spec)
        return candidate.resolve()
    folders = manifest_dirs()
    for folder in folders:
        named = folder / (spec + ".toml")
        if named.is_file():
            return named
    known = sorted({p.stem for folder in folders for p in folder.glob("*.toml")})
    if not folders:
        raise UsageError("there is no manifest named %s: no manifests folder here and %s is not set" % (spec, ENV_VAR),
                         "pass a path to a .toml file, run from a folder holding manifests/, or set %s" % ENV_VAR)
    raise UsageError("there is no manifest named %s in %s" % (spec, ", ".join(str(f) for f in folders)),
                     "choose one of: %s, or pass a path to a .toml file" % ", ".join(known) if known
                     else "pass a path to a .toml file")
