"""The application source: a local directory, or a git URL cloned at the commit the lock pins."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable

from cosybuild.profile import App, Profile, relative

__all__ = ["pin_app", "export_app", "git"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def git(*args: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise EnvironmentUnsuitable("git is not installed", "install git to pack an app from a git URL")
    if proc.returncode != 0:
        raise ArtifactRejected("git %s failed: %s" % (args[0], proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode))
    return proc.stdout


def pin_app(profile: Profile) -> dict:
    app: App = profile.app
    if app.path:
        return {"path": app.path}
    rev = app.rev or "HEAD"
    if _COMMIT.match(rev):
        commit = rev
    else:
        lines = git("ls-remote", app.git, rev, "refs/tags/%s^{}" % rev).splitlines()
        peeled = [l.split()[0] for l in lines if l.endswith("^{}")]
        found = peeled or [l.split()[0] for l in lines if l.strip()]
        if not found:
            raise ArtifactRejected("%s has no branch or tag named %s" % (app.git, rev))
        commit = found[0]
    return {"git": app.git, "rev": rev, "commit": commit, "submodules": app.submodules}


def export_app(profile: Profile, pinned: dict, workdir: Path) -> Path:
    """A directory holding the app tree to pack (a clone keeps .git, which the walk skips)."""
    if profile.app.path:
        root = relative(profile, profile.app.path)
        if not root.is_dir():
            raise ArtifactRejected("the app directory %s does not exist" % root)
        return root
    dest = workdir / "app"
    git("clone", "--quiet", "--no-checkout", pinned["git"], str(dest))
    try:
        git("checkout", "--quiet", "--detach", pinned["commit"], cwd=dest)
    except ArtifactRejected:
        raise ArtifactRejected("%s has no commit %s (pinned in the lock)" % (pinned["git"], pinned["commit"]),
                               "run cosybuild lock to pin an existing commit")
    if pinned.get("submodules", True):
        git("-c", "protocol.file.allow=always", "submodule", "update", "--init", "--recursive", "--quiet", cwd=dest)
    return dest
