"""Member-name safety: which paths an artifact may hold, checked before anything is written."""

from __future__ import annotations

import stat

__all__ = ["check_member_name", "check_member_mode", "RESERVED_TOP"]

# Top-level names in the installed tree that belong to cosyinstall, never to the app.
RESERVED_TOP = (".venv", ".cosyinstall", "pretrained_models")


def check_member_name(name: str, where: str) -> None:
    """Raise ArtifactRejected unless `name` is a plain relative POSIX path inside the tree."""
    from cosyinstall.errors import ArtifactRejected

    def bad(why: str) -> ArtifactRejected:
        return ArtifactRejected("%s holds an unsafe member name %r (%s)" % (where, name, why))

    if not name or name.endswith("/"):
        raise bad("empty or a directory")
    if "\x00" in name:
        raise bad("NUL byte")
    if "\\" in name:
        raise bad("backslash")
    if name.startswith("/"):
        raise bad("absolute path")
    if len(name) >= 2 and name[1] == ":":
        raise bad("drive letter")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad("'..', '.' or empty path component")
    if any(ord(ch) < 32 for ch in name):
        raise bad("control character")


def check_member_mode(name: str, external_attr: int, where: str) -> None:
    """Refuse symlinks, devices, FIFOs and the like: only regular files may be extracted."""
    from cosyinstall.errors import ArtifactRejected

    mode = (external_attr >> 16) & 0xFFFF
    if mode and not stat.S_ISREG(mode):
        raise ArtifactRejected(
            "%s holds %r, which is not a regular file (mode %o); links and devices are refused"
            % (where, name, mode)
        )
