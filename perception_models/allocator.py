"""CPU inference and glibc's allocator: keep a batch's memory for the next batch.

glibc hands out blocks above its mmap threshold (at most 32 MiB, adjusted
upwards as blocks are freed) as fresh mappings and unmaps them on free, trims
the heap's top above 128 KiB, and gives each thread its own arena whose heaps
cannot hold a block over 64 MiB. A batch of 32 images through a CNN has
activations of 50 MiB and more, so every batch mapped its memory anew and
faulted it in page by page: on 2 cores half the CPU time of embedding
minilm-effnet-lite0 went to the kernel (docs/benchmarks.md). With the
thresholds raised and one arena, the freed memory stays in the heap and the
next batch reuses it; the process keeps the peak of one batch, which the
next batch needs again anyway.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading

log = logging.getLogger(__name__)

# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Larger than any batch's tensors; a block above this still gets its own mapping.
_THRESHOLD = 2**30

_lock = threading.Lock()
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc for batched tensor work, once per process.

    True when the settings are in effect; False on other C libraries (musl,
    macOS), where nothing is changed.
    """
    global _applied
    with _lock:
        if _applied is None:
            _applied = _tune()
        return _applied


def _tune() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = all(
        mallopt(parameter, value) == 1
        for parameter, value in (
            (_M_MMAP_THRESHOLD, _THRESHOLD),
            (_M_TRIM_THRESHOLD, _THRESHOLD),
            (_M_ARENA_MAX, 1),
        )
    )
    if not applied:
        log.warning("glibc refused a mallopt() setting; CPU inference may page-fault more")
    return applied
