"""The two errors of a file transfer, shared by the download engine and every transport.

`TransferError` is the user's: a pinned file could not be downloaded (exit 3, one sentence).
`Transient` is a transport's: one attempt failed in a way worth retrying; the engine retries
it and, when retries run out, turns it into a TransferError.
"""

from __future__ import annotations

from typing import Optional

from cosyinstall.errors import CosyError

__all__ = ["TransferError", "Transient"]


class TransferError(CosyError):
    """A pinned file could not be downloaded (HTTP error, or network failure after retries)."""

    exit_code = 3


class Transient(Exception):
    """An attempt failed in a way worth retrying (network, 5xx, 429, short body)."""

    def __init__(self, reason: str, retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        # Seconds the server asked us to wait (Retry-After), if it said.
        self.retry_after = retry_after
