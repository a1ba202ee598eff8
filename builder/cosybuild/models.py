"""The model half of a bundle: pin each [[models]] entry and turn it into artifact members."""

from __future__ import annotations

from pathlib import Path

from cosyinstall.errors import ArtifactRejected, UsageError
from cosyinstall.progress import Reporter
from cosyinstall.zipwrite import Member

from cosybuild.cache import Cache
from cosybuild.lock import Lock
from cosybuild.profile import Profile, relative
from cosybuild.tree import walk_tree

__all__ = ["pin_models", "model_members"]


def pin_models(profile: Profile) -> list[dict]:
    pins = []
    for model in profile.models:
        if model.source == "local":
            pins.append({"name": model.name, "source": "local", "repo": model.repo})
        else:
            raise UsageError("model %s: source %s is not supported by this cosybuild yet" % (model.name, model.source),
                             "use source = \"local\" with a downloaded copy")
    return pins


def model_members(profile: Profile, lock: Lock, cache: Cache, work: Path, reporter: Reporter) -> tuple[list[Member], dict]:
    members: list[Member] = []
    for model in profile.models:
        root = relative(profile, model.repo)
        if not root.is_dir():
            raise ArtifactRejected("model %s: %s is not a directory" % (model.name, root))
        files = walk_tree(root, model.include, model.exclude)
        if not files:
            raise ArtifactRejected("model %s: %s holds no files after include/exclude" % (model.name, root))
        members += [Member("%s/%s" % (model.name, rel), str(full), full.stat().st_size, None, executable)
                    for rel, full, executable in files]
    return members, {"models": lock.models}
