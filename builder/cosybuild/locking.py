"""`cosybuild lock`: resolve packages, the target's uv, the app commit and model pins."""

from __future__ import annotations

from pathlib import Path

from cosyinstall.errors import UsageError

from cosybuild.appsource import pin_app
from cosybuild.lock import Lock, read_lock, write_lock
from cosybuild.profile import Profile
from cosybuild.resolve import LockedFile, compile_pylock, resolve, choose_file, locked_file
from cosybuild.uvtool import uv_version

__all__ = ["make_lock", "lock_profile", "ensure_lock"]


def _uv_for_target(profile: Profile) -> LockedFile:
    version = uv_version()
    packages = compile_pylock(profile, ["uv==%s" % version], no_deps=True)
    for pkg in packages:
        if pkg.get("name") == "uv" and pkg.get("wheels"):
            return locked_file(pkg, choose_file(pkg))
    raise UsageError("uv %s has no wheel for %s" % (version, profile.target.platform),
                     "install a uv release that ships wheels for the target")


def _pin_models(profile: Profile) -> list[dict]:
    pins = []
    for model in profile.models:
        if model.source == "local":
            pins.append({"name": model.name, "source": "local", "repo": model.repo})
        else:
            raise UsageError("model %s: source %s is not supported by this cosybuild yet" % (model.name, model.source),
                             "use source = \"local\" with a downloaded copy")
    return pins


def make_lock(profile: Profile) -> Lock:
    packages = resolve(profile, profile.packages.requirements)
    return Lock(
        manifest=profile.name,
        inputs_digest=profile.inputs_digest(),
        target={"python": profile.target.python, "platform": profile.target.platform},
        packages=packages,
        tools={"uv": _uv_for_target(profile)},
        app=pin_app(profile),
        models=_pin_models(profile),
    )


def lock_profile(profile: Profile) -> tuple[Lock, Path]:
    lock = make_lock(profile)
    path = profile.lock_path()
    write_lock(lock, path)
    return lock, path


def ensure_lock(profile: Profile) -> tuple[Lock, Path, bool]:
    """The profile's lock, made now if there is none; a stale lock is refused (exit 3)."""
    from cosybuild.lock import check_fresh

    path = profile.lock_path()
    lock = read_lock(path)
    if lock is None:
        lock, path = lock_profile(profile)
        return lock, path, True
    check_fresh(lock, profile, path)
    return lock, path, False
