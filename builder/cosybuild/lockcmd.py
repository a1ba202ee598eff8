"""The `cosybuild lock` command and pack's lock check: pin sections anew, or find them current.

Pinning is delegated: packages to cosybuild.packages (the target's uv), the app commit to
cosybuild.appsource, the models to cosybuild.models; the file format is cosybuild.lockfile's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cosyinstall.errors import ArtifactRejected, UsageError

from cosybuild.appsource import pin_app
from cosybuild.lockfile import OPTIONAL_SECTIONS, SECTIONS, Lock, read_lock, stale_sections, write_lock
from cosybuild.models import pin_models
from cosybuild.packages import lock_packages
from cosybuild.profile import Profile
from cosybuild.pythonbundle import pin_bundled_python

__all__ = ["LockOutcome", "lock_command", "lock_sections", "ensure_lock", "sections_for"]


def sections_for(only: str | None) -> tuple[str, ...]:
    """Lock sections a pack needs: --only packages also needs the app, which rides in that zip."""
    if only == "packages":
        return ("packages", "app", "python")
    if only == "models":
        return ("models",)
    return SECTIONS + OPTIONAL_SECTIONS


def lock_sections(profile: Profile, sections: Iterable[str] = SECTIONS + OPTIONAL_SECTIONS) -> tuple[Lock, Path]:
    """Re-pin the given sections, keep the others as they are, write the lock."""
    path = profile.lock_path()
    lock = read_lock(path)
    target = {"python": profile.target.python, "platform": profile.target.platform}
    if lock is None or lock.target != target:
        lock = Lock(profile.name, target)
    digests = profile.section_digests()
    for section in [s for s in sections if s in digests]:
        if section == "packages":
            lock.packages, lock.tools = lock_packages(profile)
        elif section == "python":
            lock.python = pin_bundled_python(profile)
        elif section == "app":
            lock.app = pin_app(profile)
        elif section == "models":
            lock.models = pin_models(profile)
        lock.digests[section] = digests[section]
    lock.manifest = profile.name
    write_lock(lock, path)
    return lock, path


def ensure_lock(profile: Profile, sections: Iterable[str] = SECTIONS + OPTIONAL_SECTIONS) -> tuple[Lock, Path, list[str]]:
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


@dataclass
class LockOutcome:
    """What `cosybuild lock` did: the sections it pinned (none when the lock was current)."""

    lock: Lock
    path: Path
    sections: list[str]


def lock_command(profile: Profile, only: str | None = None, upgrade: bool = False) -> LockOutcome:
    """Pin the missing and stale sections (`only` one of them; all asked ones with `upgrade`)."""
    wanted = [s for s in ([only] if only else list(SECTIONS + OPTIONAL_SECTIONS)) if s in profile.section_digests()]
    if only and not wanted:
        raise UsageError("%s has no %s section to lock" % (profile.path, only),
                         "the python section exists when [target] bundle-python = true")
    current = read_lock(profile.lock_path())
    if current is not None and not upgrade:
        missing, stale = stale_sections(current, profile, wanted)
        wanted = missing + stale
        if not wanted:
            return LockOutcome(current, profile.lock_path(), [])
    lock, path = lock_sections(profile, wanted)
    return LockOutcome(lock, path, wanted)
