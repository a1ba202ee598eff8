"""Local model folders: nothing to pin and nothing to transfer; the files are hashed as they are when packed."""

from __future__ import annotations

from pathlib import Path

from cosyinstall.errors import ArtifactRejected
from cosyinstall.progress import Reporter

from cosybuild.cache import Cache
from cosybuild.profile import Model
from cosybuild.dirwalk import walk_tree
from cosybuild.hubs import FetchedFile

__all__ = ["LocalFolder"]


class LocalFolder:
    """A [[models]] entry with source = "local": `repo` is a directory, relative to the manifest."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir

    def root(self, model: Model) -> Path:
        path = Path(model.repo)
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def pin(self, model: Model) -> dict:
        # A local directory has no revision; its bytes are hashed into the artifact's manifest.
        return {"name": model.name, "source": "local", "repo": model.repo}

    def fetch(self, model: Model, pin: dict, cache: Cache, reporter: Reporter) -> list[FetchedFile]:
        root = self.root(model)
        if not root.is_dir():
            raise ArtifactRejected("model %s: %s is not a directory" % (model.name, root))
        files = walk_tree(root, model.include, model.exclude)
        if not files:
            raise ArtifactRejected("model %s: %s holds no files after include/exclude" % (model.name, root))
        return files
