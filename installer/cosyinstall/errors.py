"""Typed errors carrying the contract's exit codes; each renders as one sentence."""

from __future__ import annotations

__all__ = [
    "CosyError",
    "UsageError",
    "ArtifactRejected",
    "EnvironmentUnsuitable",
    "NotReady",
    "EXIT_OK",
    "EXIT_BUG",
]

EXIT_OK = 0
EXIT_BUG = 1


class CosyError(Exception):
    """Base of every error a user may see; `exit_code` follows DESIGN.md section 4.2."""

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


class NotReady(CosyError):
    """The server was started but did not become ready."""

    exit_code = 5
