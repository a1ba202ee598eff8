"""Content-addressed file store: verified bytes by sha256, plus resumable partial downloads."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

from cosyinstall.streams import copy_verified

__all__ = ["Cache", "CacheLock", "default_cache_root"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def default_cache_root() -> Path:
    """`$COSYBUILD_CACHE`, else `$XDG_CACHE_HOME/cosybuild`, else `~/.cache/cosybuild`."""
    explicit = os.environ.get("COSYBUILD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # XDG says a relative value is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "cosybuild"
    return Path.home() / ".cache" / "cosybuild"


def _checked(sha256: str) -> str:
    # The digest becomes a path component, so anything but 64 hex digits could escape the root.
    digest = sha256.lower()
    if not _HEX64.fullmatch(digest):
        raise ValueError("not a sha256 hex digest: %r" % (sha256,))
    return digest


class Cache:
    """Files under `root/sha256/ab/<hex>`; in-flight downloads under `root/partial/`.

    A file reaches `sha256/` only through `commit` or `put_file`, i.e. after its bytes were
    checked against the digest, so anything found there can be trusted by name and size.
    """

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    def __repr__(self) -> str:
        return "Cache(%r)" % (str(self.root),)

    def path_for(self, sha256: str) -> Path:
        digest = _checked(sha256)
        return self.root / "sha256" / digest[:2] / digest

    def get(self, sha256: str, size: int) -> Optional[Path]:
        """The cached file for `sha256`, or None if absent or not `size` bytes long."""
        path = self.path_for(sha256)
        try:
            st = path.stat()
        except OSError:
            return None
        # A wrong size means a damaged store (disk full, manual edit): treat it as a miss so
        # the caller fetches again and `commit` replaces it.
        if not path.is_file() or st.st_size != size:
            return None
        return path

    def partial_path(self, sha256: str) -> Path:
        """A stable `.part` path, so a later process can resume what an earlier one began."""
        digest = _checked(sha256)
        partial = self.root / "partial"
        partial.mkdir(parents=True, exist_ok=True)
        return partial / (digest + ".part")

    def commit(self, part: Path, sha256: str) -> Path:
        """Move verified bytes into place; only call after the digest was checked."""
        final = self.path_for(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        # os.replace is atomic on one filesystem: readers see the old file or the whole new one.
        os.replace(part, final)
        return final

    def put_file(self, src: Path, sha256: str, size: int) -> Path:
        """Copy a local file in, verifying while copying; ArtifactRejected if it does not match."""
        cached = self.get(sha256, size)
        if cached is not None:
            return cached
        digest = _checked(sha256)
        partial = self.root / "partial"
        partial.mkdir(parents=True, exist_ok=True)
        # A private temp name, not partial_path(): a concurrent download may own that one.
        fd, tmp_name = tempfile.mkstemp(prefix=digest[:16] + ".", suffix=".tmp", dir=str(partial))
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as dst, open(src, "rb") as handle:
                copy_verified(handle, dst, size, digest, Path(src).name)
            return self.commit(tmp, digest)
        except BaseException:
            # Never keep bytes that failed (or did not finish) verification.
            tmp.unlink(missing_ok=True)
            raise

    def try_lock(self, sha256: str) -> Optional["CacheLock"]:
        """Take the per-digest download lock without waiting; None if another holder has it.

        Two processes sharing a cache must not append to the same `.part` at once.
        """
        digest = _checked(sha256)
        partial = self.root / "partial"
        partial.mkdir(parents=True, exist_ok=True)
        return CacheLock._try(partial / (digest + ".lock"))


class CacheLock:
    """An exclusive advisory lock on one digest; the lock file is removed on release."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: Optional[int] = fd
        self.path = path

    @classmethod
    def _try(cls, path: Path) -> Optional["CacheLock"]:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _lock_fd(fd):
                os.close(fd)
                return None
            if sys.platform != "win32":
                # The previous holder unlinks the file on release; if that happened after we
                # opened it, we locked an orphan inode and must try again on the new file.
                try:
                    same = os.stat(str(path)).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    return None
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if sys.platform != "win32":
            # Unlink while still holding the lock, so no waiter can lock a file we then remove.
            try:
                os.unlink(str(self.path))
            except OSError:
                pass
            os.close(fd)
        else:
            import msvcrt

            # Windows wants byte-range locks released before the handle closes.
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
            except OSError:
                pass
            os.close(fd)
            try:
                os.unlink(str(self.path))
            except OSError:
                pass  # another process has it open and now owns it

    def __enter__(self) -> "CacheLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_fd(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
