"""`cosybuild lock`: pin packages (with the target's uv), the app commit and the models."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from cosyinstall.errors import ArtifactRejected

from cosybuild.appsource import pin_app
from cosybuild.lock import SECTIONS, Lock, read_lock, stale_sections, write_lock
from cosybuild.models import pin_models
from cosybuild.packages import lock_packages
from cosybuild.profile import Profile
from cosybuild.pythonbundle import pin_bundled_python

__all__ = ["lock_sections", "ensure_lock", "sections_for"]


def sections_for(only: str | None) -> tuple[str, ...]:
    """Lock sections a pack needs: --only packages also needs the app, which rides in that zip."""
    if only == "packages":
        return ("packages", "app")
    if only == "models":
        return ("models",)
    return SECTIONS


def lock_sections(profile: Profile, sections: Iterable[str] = SECTIONS) -> tuple[Lock, Path]:
    """Re-pin the given sections, keep the others as they are, write the lock."""
    path = profile.lock_path()
    lock = read_lock(path)
    target = {"python": profile.target.python, "platform": profile.target.platform}
    if lock is None or lock.target != target:
        lock = Lock(profile.name, target)
    digests = profile.section_digests()
    for section in sections:
        if section == "packages":
            lock.packages, lock.tools = lock_packages(profile)
            lock.python = pin_bundled_python(profile)
        elif section == "app":
            lock.app = pin_app(profile)
        elif section == "models":
            lock.models = pin_models(profile)
        lock.digests[section] = digests[section]
    lock.manifest = profile.name
    write_lock(lock, path)
    return lock, path


def ensure_lock(profile: Profile, sections: Iterable[str] = SECTIONS) -> tuple[Lock, Path, list[str]]:
    """The lock with `sections` current: missing sections are locked now, stale ones refused (exit 3)."""
    sections = list(sections)
    path = profile.lock_path()
    lock = read_lock(path) or Lock(profile.name, {"python": profile.target.python, "platform": profile.target.platform})
    missing, stale = stale_sections(lock, profile, sections)
    if stale:
        raise ArtifactRejected("%s no longer matches %s (%s changed)" % (path, profile.path, ", ".join(stale)),
                               "run cosybuild lock %s" % profile.name)
    if missing:
        lock, path = lock_sections(profile, missing)
    return lock, path, missing
