"""The batch skeleton shared by verified downloads: cache hits, resume credit, first-error-wins threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, TypeVar

from .cache import Cache

__all__ = ["Cancelled", "Pinned", "split_cached", "credited", "run_until_first_error"]


class Cancelled(Exception):
    """Another item failed (or the user interrupted): stop quietly and keep the .part."""


class Pinned(Protocol):
    """A file known by sha256 and size, as the lock pins it."""

    # Properties, so frozen dataclasses match too.
    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...


P = TypeVar("P", bound=Pinned)
R = TypeVar("R")


def split_cached(items: Iterable[P], cache: Cache) -> Tuple[Dict[str, Path], List[P]]:
    """Split already deduplicated items into (sha256 -> cached path, items still to download)."""
    hits: Dict[str, Path] = {}
    todo: List[P] = []
    for item in items:
        hit = cache.get(item.sha256, item.size)
        if hit is not None:
            hits[item.sha256] = hit
        else:
            todo.append(item)
    return hits, todo


def credited(todo: Iterable[Pinned], cache: Cache) -> Dict[str, int]:
    """sha256 -> bytes an earlier run left in its .part, capped at the pinned size.

    They are re-hashed rather than downloaded, so the progress bar counts only the rest.
    """
    have: Dict[str, int] = {}
    for item in todo:
        try:
            size = cache.partial_path(item.sha256).stat().st_size
        except OSError:
            size = 0
        have[item.sha256] = min(size, item.size)
    return have


def run_until_first_error(
    todo: Sequence[P],
    work: Callable[[P], R],
    jobs: int,
    thread_name: str,
    cancel: threading.Event,
) -> Tuple[Dict[str, R], Optional[BaseException]]:
    """Run `work` on every item in up to `jobs` threads; return (sha256 -> result, first error).

    The first error sets `cancel`, queued items then never start and running ones are
    expected to raise `Cancelled` soon. The error is returned, not raised, once every thread
    has stopped, so the caller raises it where it fits its progress display.
    """
    errors: List[BaseException] = []
    errors_lock = threading.Lock()

    def guarded(item: P) -> R:
        try:
            if cancel.is_set():
                raise Cancelled()
            return work(item)
        except Cancelled:
            # A consequence of the first error, not an error of its own.
            raise
        except BaseException as exc:
            with errors_lock:
                errors.append(exc)
            # Set before this thread takes the next item, so queued items never start.
            cancel.set()
            raise

    done: Dict[str, R] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(todo))), thread_name_prefix=thread_name)
    try:
        futures = {pool.submit(guarded, item): item for item in todo}
        for future in as_completed(futures):
            if future.exception() is None:
                done[futures[future].sha256] = future.result()
            elif errors:
                break
    finally:
        # Also reached on KeyboardInterrupt: running downloads stop at their next chunk
        # and keep their .part for the next run.
        cancel.set()
        pool.shutdown(wait=True, cancel_futures=True)
    return done, (errors[0] if errors else None)
