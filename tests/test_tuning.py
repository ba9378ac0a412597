"""Process tuning: the BLAS thread limit and the allocator settings every worker applies."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from service.tuning import keep_large_allocations, tune_process


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)
def test_allocator_keeps_large_arrays_on_glibc() -> None:
    assert keep_large_allocations() is True


def test_tune_process_limits_the_blas_threads() -> None:
    with threadpool_limits(limits=2, user_api="blas"):  # the original limits come back after
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        if not blas or max(pool["num_threads"] for pool in blas) < 2:
            pytest.skip("the BLAS here cannot run two threads")
        tune_process(1)
        after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert after == [1] * len(after)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's",
)
def test_freed_heap_memory_goes_back_once_the_process_is_quiet() -> None:
    """A busy spell of 16 MiB arrays (on the heap, and kept there once freed: less than the
    128 MiB trim threshold) leaves RSS high; the watcher hands it back once quiet. In a fresh
    process: what this one allocated before would blur the figures."""
    result = subprocess.run(
        [sys.executable, "-c", QUIET_SPELL], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)


QUIET_SPELL = """
import threading, time
from pathlib import Path
import numpy as np
from harness.servers import wait_for
from service.tuning import keep_large_allocations, release_when_quiet

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

assert keep_large_allocations() is True
stop = threading.Event()
watcher = release_when_quiet(check_seconds=0.2, quiet_cpu=0.25, stop=stop)
assert watcher is not None
before = rss_mib()
spell_ends = time.monotonic() + 0.6  # busy through at least two checks
while time.monotonic() < spell_ends:
    # 6 x 16 MiB, touched: freed, under the 128 MiB glibc then trims by itself
    arrays = [np.ones(2 * 2**20) for _ in range(6)]
    del arrays
held = rss_mib()
assert held > before + 64, (before, held)  # glibc kept what was freed
wait_for(lambda: rss_mib() < held - 64, 5.0, "freed memory handed back", interval=0.05)
print(f"RSS {before:.0f} MiB, {held:.0f} after the spell, {rss_mib():.0f} once quiet")
stop.set()
watcher.join(5.0)
"""
