"""Model hubs: the ModelHub protocol and the pin format they share (the registry is hubs.registry).

A pin (one entry of lock.models) records what a [[models]] entry resolved to:
`{"name", "source", "repo", "revision", "commit"?, "files": [{"path", "size", "sha256", ...}]}`.
Hubs list every file with its sha256, so pack fetches each one through cosybuild.download
and checks it by content; `local` pins nothing and is hashed as it is at pack time.
Adding a hub: a module here with a class following ModelHub, a branch in `registry.get_hub`, and
its name in cosybuild.profile.MODEL_SOURCES.
"""

from __future__ import annotations

from typing import Protocol

from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import Reporter

from cosybuild.cache import Cache
from cosybuild.dirwalk import TreeFile
from cosybuild.profile import Model

__all__ = ["ModelHub", "FetchedFile", "pinned_files", "RELOCK_HINT", "RETRY_HINT"]

# (path inside the model directory, file on disk, executable)
FetchedFile = TreeFile

# What the download engine tells the user about a hub file that failed or changed.
RETRY_HINT = "check the network, proxy or HF_ENDPOINT / MODELSCOPE_ENDPOINT and run again"
RELOCK_HINT = ("the hub serves different bytes under this name; "
               "run cosybuild lock --only models --upgrade if the change is expected")


class ModelHub(Protocol):
    """Where one kind of model repository comes from."""

    def pin(self, model: Model) -> dict:
        """Resolve the model's revision now: the pin dict kept in the lock."""

    def fetch(self, model: Model, pin: dict, cache: Cache, reporter: Reporter) -> list[FetchedFile]:
        """Make the pinned files present and verified locally; sorted by path."""


def pinned_files(model: Model, pin: dict) -> list[dict]:
    """The pin's file list, checked to belong to this model (a hand-edited lock is caught here)."""
    if pin.get("source") != model.source or pin.get("repo") != model.repo:
        raise ArtifactRejected("the lock pins model %s to %s %s, but the manifest says %s %s"
                               % (model.name, pin.get("source"), pin.get("repo"), model.source, model.repo),
                               "run cosybuild lock --only models --upgrade")
    files = pin.get("files")
    if not isinstance(files, list) or not files:
        raise ArtifactRejected("the lock lists no files for model %s" % model.name, "run cosybuild lock --only models --upgrade")
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("size"), int) \
                or not isinstance(f.get("sha256"), str) or len(f["sha256"]) != 64:
            raise ArtifactRejected("the lock entry %r of model %s is malformed" % (f, model.name),
                                   "run cosybuild lock --only models --upgrade")
    return files
