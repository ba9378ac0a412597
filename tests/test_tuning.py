"""Process tuning: the BLAS thread limit and the allocator settings every worker applies."""

from __future__ import annotations

import platform

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
