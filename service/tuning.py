"""Process tuning for NumPy work, applied by every server worker and training child."""

from __future__ import annotations

import ctypes
import logging

from threadpoolctl import threadpool_limits

log = logging.getLogger("iris.tuning")
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
HEAP_ARRAYS_UP_TO = 32 * 2**20  # glibc's largest mmap threshold
KEEP_FREED = 128 * 2**20


def tune_process(blas_threads: int) -> None:
    """Limit the BLAS to ``blas_threads`` and keep large arrays on the heap.

    The matrices here are thin (4 to 1024 by 3 or 4): a multi-threaded BLAS spends longer
    waking its threads than multiplying, and server workers already use the cores.
    """
    threadpool_limits(blas_threads, user_api="blas")
    if not keep_large_allocations():
        log.info("allocator tuning skipped: no glibc mallopt on this platform")


def keep_large_allocations() -> bool:
    """Serve arrays up to 32 MiB from the heap and keep up to 128 MiB freed (glibc).

    By default glibc maps each array over its threshold afresh and unmaps it when freed, so
    every (100,000 x 16) float64 temporary of a large request page-faults in on first touch:
    about 40% of a forward and backward pass on 100,000 rows. Returns False where there is
    no glibc (musl, macOS): nothing changes there.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_ARRAYS_UP_TO)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED)
    )
