"""The application source: a local directory, or a git URL checked out, with its submodules, at
the commit the lock pins.

`pin_app` turns the manifest's rev (branch, tag, HEAD or a full commit) into a commit;
`export_app` fetches exactly that commit into a fresh repository and checks it out, so the
tree holds the commit's tracked files and nothing else but `.git` entries, which the
packer's tree walk leaves out. The submodules come at the commits the superproject records.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from cosyinstall.errors import ArtifactRejected, EnvironmentUnsuitable, UsageError

from cosybuild.profile import App, Profile, relative

__all__ = ["pin_app", "export_app", "git", "resolve_rev"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Checked-out bytes must be the committed bytes whatever the user's git config says.
_CHECKOUT_CONFIG = ("-c", "core.autocrlf=false", "-c", "core.eol=lf", "-c", "advice.detachedHead=false")


class GitError(ArtifactRejected):
    """A git command failed; the message carries git's own last line."""


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git without prompts; raise GitError (exit 3) with git's last stderr line."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"})
    except FileNotFoundError:
        raise EnvironmentUnsuitable("git is not installed", "install git to pack an app from a git URL") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        command = next((a for a in args if not a.startswith("-") and "=" not in a), "?")
        raise GitError("git %s failed: %s" % (command, lines[-1] if lines else "exit %d" % proc.returncode))
    return proc.stdout


def _is_local(url: str) -> bool:
    return url.startswith("file://") or url.startswith(("/", "./", "../")) or os.path.isdir(url)


def resolve_rev(url: str, rev: str) -> str:
    """The commit `rev` names in the repository at `url`: a full commit, HEAD, a tag or a branch."""
    rev = rev.strip()
    if _COMMIT.match(rev.lower()):
        return rev.lower()
    refs: dict[str, str] = {}
    # The "^{}" pattern asks for an annotated tag's peeled line too: the commit it points at.
    for line in git("ls-remote", url, rev, rev + "^{}").splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    # Git's own order for a short name: tags before branches; a tag's commit is its peeled value.
    for name in ([rev] if rev == "HEAD" or rev.startswith("refs/") else []) + [
            "refs/tags/%s^{}" % rev, "refs/tags/%s" % rev, "refs/heads/%s" % rev]:
        if name in refs:
            return refs[name]
    raise UsageError("the app repository %s has no branch or tag named %s" % (url, rev),
                     "fix [app] rev in the manifest (a full 40-character commit works too)")


def pin_app(profile: Profile) -> dict:
    """The lock's app section: the directory, or the git URL with the commit its rev names now."""
    app: App = profile.app
    if app.path:
        return {"path": app.path}
    assert app.git is not None
    return {"git": app.git, "rev": app.rev or "HEAD", "commit": resolve_rev(app.git, app.rev or "HEAD"),
            "submodules": app.submodules}


def export_app(profile: Profile, pinned: dict, workdir: Path) -> Path:
    """A directory holding the app tree to pack: the local directory, or a checkout of the pinned commit."""
    if profile.app.path:
        root = relative(profile, profile.app.path)
        if not root.is_dir():
            raise ArtifactRejected("the app directory %s does not exist" % root)
        return root
    url, commit = pinned.get("git"), str(pinned.get("commit", ""))
    if not url or not _COMMIT.match(commit):
        raise ArtifactRejected("the lock pins no app commit", "run cosybuild lock --only app --upgrade")
    dest = workdir / "app"
    git("init", "--quiet", str(dest))
    # An "origin" remote: relative submodule URLs (../Matcha-TTS.git) resolve against it.
    git("remote", "add", "origin", url, cwd=dest)
    try:
        # Only the pinned commit, not the history: the common servers allow fetching a commit.
        git("fetch", "--quiet", "--depth", "1", "origin", commit, cwd=dest)
    except GitError:
        try:
            git("fetch", "--quiet", "--tags", "origin", cwd=dest)
        except GitError as exc:
            raise ArtifactRejected("cannot fetch the app repository %s: %s" % (url, exc.message),
                                   "check the URL and the network") from None
    try:
        git(*_CHECKOUT_CONFIG, "checkout", "--quiet", "--detach", commit, cwd=dest)
    except GitError:
        raise ArtifactRejected("the app repository %s has no commit %s (pinned in the lock)" % (url, commit),
                               "run cosybuild lock --only app --upgrade to pin an existing commit") from None
    if pinned.get("submodules", True):
        # Git refuses file:// submodules by default (a remote could point one at your disk);
        # a local superproject is the user's own, so its local submodules are allowed.
        allow = ("-c", "protocol.file.allow=always") if _is_local(url) else ()
        try:
            git(*allow, *_CHECKOUT_CONFIG, "submodule", "update", "--init", "--recursive", "--quiet", cwd=dest)
        except GitError as exc:
            raise ArtifactRejected("the submodules of %s at %s cannot be checked out: %s" % (url, commit[:12], exc.message),
                                   "check that the submodule URLs in .gitmodules are reachable") from None
    head = git("rev-parse", "HEAD", cwd=dest).strip()
    if head != commit:  # pragma: no cover - checkout --detach guarantees it
        raise ArtifactRejected("the app checkout is at %s, not the pinned %s" % (head, commit))
    return dest
