"""Shared by the Python benchmarks: drop the page cache before a timed run (root only), and wait
until the memory it freed is in the same state whatever ran before.

On a VM that hands free memory back to its host (free page reporting), a page the guest touches
after the host took it back costs a host fault: touching 10 GB took 13 to 31 CPU-s of kernel time
here, against about 1 s where pages are simply reused. The host takes freed memory back a slice
at a time (here about 1 GB every 2.5 s), so a run that starts a few seconds after the drop finds
part of what the previous run freed still cheap: the more the previous run had cached, the
cheaper the next one. In a fixed order (a, b, c, a, ...) that favours whichever side follows the
heaviest. So after the drop this waits until the kernel's count of reported memory has stopped
moving, i.e. every side starts with all free memory handed back. Where the kernel reports no such
count (bare metal, most clouds), a short fixed settle is all.

`warm_memory(gb)` is the other fair start: right before a timed run, touch that much memory and
free it, so that every side finds the same pool of pages the guest already holds (as on a box
that is not a VM), whatever ran before.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time

# Seconds to let the kernel settle after the drop where nothing tells when it is done.
SETTLE = 5.0
REPORTED = "/sys/module/page_reporting/parameters/reported_kib"
# The count must stay still this long (longer than one of the kernel's reporting passes) ...
STILL = 6.0
# ... and is not waited on longer than this.
MOST = 180.0


def drop_caches() -> bool:
    """Write back dirty pages, then drop the page cache; False when not permitted (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError:
        return False
    if not _wait_reported():
        time.sleep(SETTLE)
    return True


def _reported() -> "int | None":
    try:
        with open(REPORTED) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _wait_reported() -> bool:
    """Wait until the host has taken back what the drop freed; False when this kernel does not say."""
    last = _reported()
    if last is None:
        return False
    start = still_since = time.monotonic()
    while time.monotonic() - start < MOST:
        time.sleep(0.5)
        now = _reported()
        if now is None:
            return False
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= STILL:
            break
    return True


def warm_memory(gb: float) -> None:
    """Touch `gb` GiB of fresh memory and free it again (the next run finds those pages held)."""
    if gb <= 0:
        return
    size = int(gb * (1 << 30))
    block = mmap.mmap(-1, size)
    pointer = ctypes.c_char.from_buffer(block)
    ctypes.memset(ctypes.addressof(pointer), 1, size)
    del pointer
    block.close()
