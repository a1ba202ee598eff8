"""`cosybuild lock`: pin packages, the target's uv, the app commit and the models."""

from __future__ import annotations

from pathlib import Path

from cosybuild.appsource import pin_app
from cosybuild.lock import Lock, check_fresh, read_lock, write_lock
from cosybuild.models import pin_models
from cosybuild.packages import lock_packages
from cosybuild.profile import Profile

__all__ = ["make_lock", "lock_profile", "ensure_lock"]


def make_lock(profile: Profile) -> Lock:
    packages, tools = lock_packages(profile)
    return Lock(
        manifest=profile.name,
        inputs_digest=profile.inputs_digest(),
        target={"python": profile.target.python, "platform": profile.target.platform},
        packages=packages,
        tools=tools,
        app=pin_app(profile),
        models=pin_models(profile),
    )


def lock_profile(profile: Profile) -> tuple[Lock, Path]:
    lock = make_lock(profile)
    path = profile.lock_path()
    write_lock(lock, path)
    return lock, path


def ensure_lock(profile: Profile) -> tuple[Lock, Path, bool]:
    """The profile's lock, made now if there is none; a stale lock is refused (exit 3)."""
    path = profile.lock_path()
    lock = read_lock(path)
    if lock is None:
        lock, path = lock_profile(profile)
        return lock, path, True
    check_fresh(lock, profile, path)
    return lock, path, False
