"""Shared by the Python benchmarks: drop the page cache before a timed run (root only)."""

from __future__ import annotations

import os
import time

# Seconds to let the kernel settle after the drop: on a VM that reports free memory to its host
# (free page reporting), what was just freed is handed back over the next seconds, and a run that
# started at once would find cheap recycled pages where the next one finds costly fresh ones.
SETTLE = 5.0


def drop_caches() -> bool:
    """Write back dirty pages, then drop the page cache; False when not permitted (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError:
        return False
    time.sleep(SETTLE)
    return True
