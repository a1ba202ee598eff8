"""Typed errors carrying the contract's exit codes; each renders as one sentence."""

from __future__ import annotations

import errno

__all__ = [
    "CosyError",
    "UsageError",
    "ArtifactRejected",
    "EnvironmentUnsuitable",
    "DiskFull",
    "is_disk_full",
    "says_disk_full",
    "NotReady",
    "EXIT_OK",
    "EXIT_BUG",
]

EXIT_OK = 0
EXIT_BUG = 1


class CosyError(Exception):
    """Base of every error a user may see; `exit_code` follows docs/exit-codes.md."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def sentence(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += "; " + self.hint.rstrip(".")
        return text + "."

    def __str__(self) -> str:
        return self.sentence()


class UsageError(CosyError):
    """The command line or a manifest was wrong."""

    exit_code = 2


class ArtifactRejected(CosyError, ValueError):
    """An artifact is missing, truncated, corrupt, unsafe or does not match its manifest."""

    exit_code = 3


class EnvironmentUnsuitable(CosyError):
    """The box cannot take the install: platform, Python, disk, launcher or permission."""

    exit_code = 4


class DiskFull(EnvironmentUnsuitable):
    """The disk (or the user's quota) filled up: ENOSPC or EDQUOT, seen by us or reported by uv.

    `during` names the work ("installing packages"), else `path` the file being written.
    """

    HINT = "free some space and run apply again"

    def __init__(self, path: str = "", hint: str = HINT, during: str = "") -> None:
        what = "during %s" % during if during else "while writing %s" % path
        super().__init__("the disk filled up %s" % what, hint)
        self.path = path


_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
# How a child process (uv) reports ENOSPC and EDQUOT in its output.
_FULL_WORDS = ("No space left", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that means the disk is full, and for a DiskFull already raised."""
    return isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in _FULL)


def says_disk_full(output: str) -> bool:
    """True when a child process's output reports a full disk or quota."""
    return any(words in output for words in _FULL_WORDS)


class NotReady(CosyError):
    """The server was started but did not become ready."""

    exit_code = 5
