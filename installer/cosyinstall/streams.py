"""Chunked copy and hashing: every byte read once, hashed once, bounded by its declared size."""

from __future__ import annotations

import hashlib
from typing import IO, Callable, Optional, Tuple

from cosyinstall.errors import ArtifactRejected

__all__ = ["CHUNK", "copy_verified", "hash_file", "hash_stream"]

CHUNK = 1024 * 1024


def copy_verified(
    src: IO[bytes],
    dst: Optional[IO[bytes]],
    expected_size: int,
    expected_sha256: Optional[str],
    what: str,
    advance: Optional[Callable[[int], None]] = None,
) -> str:
    """Copy src to dst (or only read, if dst is None); raise ArtifactRejected naming `what`.

    Returns the sha256; with expected_sha256=None the size is still enforced and the digest
    is only computed, for files whose hash becomes known while they are written.

    Reading stops one byte past the declared size, so a member that lies about its size
    (a zip bomb) never fills the disk.
    """
    hasher = hashlib.sha256()
    size = 0
    limit = expected_size + 1
    while size < limit:
        chunk = src.read(min(CHUNK, limit - size))
        if not chunk:
            break
        size += len(chunk)
        if size > expected_size:
            raise ArtifactRejected("%s is larger than the %d bytes its manifest declares" % (what, expected_size))
        hasher.update(chunk)
        if dst is not None:
            dst.write(chunk)
        if advance is not None:
            advance(len(chunk))
    if size != expected_size:
        raise ArtifactRejected("%s has %d bytes but its manifest declares %d" % (what, size, expected_size))
    actual = hasher.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise ArtifactRejected(
            "%s is corrupt: sha256 %s, expected %s" % (what, actual[:16] + "…", expected_sha256[:16] + "…")
        )
    return actual


def hash_stream(src: IO[bytes], advance: Optional[Callable[[int], None]] = None) -> Tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        hasher.update(chunk)
        size += len(chunk)
        if advance is not None:
            advance(len(chunk))
    return size, hasher.hexdigest()


def hash_file(path: str, advance: Optional[Callable[[int], None]] = None) -> Tuple[int, str]:
    with open(path, "rb") as handle:
        return hash_stream(handle, advance)
