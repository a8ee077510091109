"""Process-level tuning applied before training starts."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def tune_allocator() -> bool:
    """Keep large tensor buffers in the heap instead of mmap/munmap per use (glibc).

    Buffers such as a CNN's ``[T·B, 32, 28, 28]`` (~100 MB) pass glibc's mmap
    threshold, so every free returns them to the OS and the next use page-faults them
    back (design.md §7 measured 111 → 161 samples/s on the layerwise CNN). This is
    what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=…`` does, applied from inside
    the process. Skipped when the user set either variable, or off Linux/glibc, or
    with ``SNNRUN_MALLOC_TUNING=0``. Returns whether it applied.
    """
    if (
        not sys.platform.startswith("linux")
        or os.environ.get("SNNRUN_MALLOC_TUNING") == "0"
        or "MALLOC_MMAP_MAX_" in os.environ
        or "MALLOC_TRIM_THRESHOLD_" in os.environ
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    ok = mallopt(M_MMAP_MAX, 0) == 1
    ok = mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    return ok
