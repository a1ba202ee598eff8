"""The local folders a manifest names ([app] path, local [[models]] repo) must exist before any work starts.

Checked by `cosybuild lock` and by pack's lock check, so a typo in a path fails in the first
second naming the path, not after minutes of resolving and downloading.
"""

from __future__ import annotations

from cosyinstall.errors import UsageError

from cosybuild.profile import Profile, relative

__all__ = ["check_local_folders"]


def check_local_folders(profile: Profile) -> None:
    """Raise a UsageError (exit 2) naming the first local folder of the manifest that is not a directory."""
    if profile.app.path:
        root = relative(profile, profile.app.path)
        if not root.is_dir():
            raise UsageError("the app folder %s does not exist" % root,
                             "fix [app] path in %s (it is relative to the manifest)" % profile.path)
    for model in profile.models:
        if model.source != "local":
            continue
        root = relative(profile, model.repo)
        if not root.is_dir():
            raise UsageError("model %s: the folder %s does not exist" % (model.name, root),
                             "fix its repo in %s (it is relative to the manifest)" % profile.path)
