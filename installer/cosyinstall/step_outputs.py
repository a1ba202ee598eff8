"""Whether what a completed step left in the tree is still there: a cheap look, no hashing.

The journal says a step is done, but a user may since have deleted `.venv`, a model folder
or an app file. Every check here is an lstat (type and size against the installed
manifest), so a plain apply notices a missing or truncated output and redoes that step
instead of saying that nothing changed. Changed content of the right size is what
`cosyinstall verify` finds by hashing (and marks for the next apply).
"""

from __future__ import annotations

import os
import stat
from typing import List, Optional

from cosyinstall import installed as inst
from cosyinstall.artifact import APP_PREFIX, ArtifactManifest, FileEntry
from cosyinstall.errors import ArtifactRejected
from cosyinstall.tree import InstallTree

__all__ = ["missing_output"]


def _first_missing(root: str, entries: List[FileEntry], strip: str) -> Optional[str]:
    for entry in entries:
        path = os.path.join(root, *entry.path[len(strip):].split("/"))
        try:
            st = os.lstat(path)
        except OSError:
            return "%s is missing" % path
        if not stat.S_ISREG(st.st_mode):
            return "%s is not a file" % path
        if st.st_size != entry.size:
            return "%s has %d bytes, %d expected" % (path, st.st_size, entry.size)
    return None


def _model_entries(manifest: ArtifactManifest) -> List[FileEntry]:
    try:
        return list(manifest.models_meta().known(manifest).values())
    except ArtifactRejected:
        return list(manifest.files)


def missing_output(tree: InstallTree, step: str) -> Optional[str]:
    """Why the output of completed step `step` is not all there (one phrase), or None if it is."""
    if step == "venv":
        for path in (tree.venv_python, tree.venv_cfg):
            if not os.path.exists(path):
                return "%s is missing" % path
        if inst.venv_record(tree) is None:
            return "the record of %s is missing" % tree.venv
        return None
    kind = "packages" if step == "app" else "models"
    manifest = inst.installed_manifest(tree, kind)
    if manifest is None:
        return "the record of the installed %s is missing" % kind
    if step == "app":
        return _first_missing(tree.app, inst.app_entries(manifest), APP_PREFIX)
    return _first_missing(tree.models, _model_entries(manifest), "")
