"""Shared by the Python benchmarks: drop the page cache before a timed run (root only)."""

from __future__ import annotations

import os


def drop_caches() -> bool:
    """Write back dirty pages, then drop the page cache; False when not permitted (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False
