"""Model sources: the ModelSource protocol, the registry of sources, and the pin format they share.

A pin (one entry of lock.models) records what a [[models]] entry resolved to:
`{"name", "source", "repo", "revision", "commit"?, "files": [{"path", "size", "sha256", ...}]}`.
Hub sources list every file with its sha256, so pack can fetch and check each one by content;
`local` pins nothing and is hashed as it is at pack time.
"""

from __future__ import annotations

import fnmatch
import posixpath
from pathlib import Path
from typing import Iterable, Optional, Protocol

from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import Reporter

from cosybuild.cache import Cache
from cosybuild.profile import Model

__all__ = ["ModelSource", "FetchedFile", "get_source", "wanted", "pinned_files", "SOURCES"]

# (path inside the model directory, file on disk, executable)
FetchedFile = tuple[str, Path, bool]

SOURCES = ("huggingface", "modelscope", "local")


class ModelSource(Protocol):
    """Where one kind of model repository comes from."""

    def pin(self, model: Model) -> dict:
        """Resolve the model's revision now: the pin dict kept in the lock."""

    def fetch(self, model: Model, pin: dict, cache: Cache, reporter: Reporter) -> list[FetchedFile]:
        """Make the pinned files present and verified locally; sorted by path."""


def get_source(name: str, base_dir: Path, cache: Optional[Cache] = None) -> ModelSource:
    """The source named in a manifest; `base_dir` anchors local paths, `cache` takes lock-time downloads."""
    # Imported here so that a manifest of local models never imports the hub clients.
    if name == "huggingface":
        from cosybuild.sources.huggingface import HuggingFaceSource

        return HuggingFaceSource(cache)
    if name == "modelscope":
        from cosybuild.sources.modelscope import ModelScopeSource

        return ModelScopeSource(cache)
    if name == "local":
        from cosybuild.sources.local import LocalSource

        return LocalSource(base_dir)
    raise ValueError("unknown model source %r" % name)


def wanted(path: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """The include/exclude rule: a glob matches the whole relative path or the file's base name."""
    include, exclude = list(include), list(exclude)

    def hit(patterns: list[str]) -> bool:
        base = posixpath.basename(path)
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(base, p) for p in patterns)

    return (not include or hit(include)) and not (exclude and hit(exclude))


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
