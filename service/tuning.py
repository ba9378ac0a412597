"""Process tuning for NumPy work, applied by every server worker and training child."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable

from threadpoolctl import threadpool_limits

log = logging.getLogger("iris.tuning")
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
HEAP_ARRAYS_UP_TO = 32 * 2**20  # glibc's largest mmap threshold
KEEP_FREED = 128 * 2**20
# The server's freed memory goes back to the system once the process has been quiet (under
# QUIET_CPU of a core) for one TRIM_CHECK_SECONDS after a busier one: see release_when_quiet.
TRIM_CHECK_SECONDS = 1.0
QUIET_CPU = 0.25
_watching: int | None = None  # the pid whose watcher thread runs
_watching_lock = threading.Lock()


def tune_process(blas_threads: int) -> None:
    """Limit the BLAS to ``blas_threads``, ask for short CPU slices (:func:`ask_short_slices`),
    keep large arrays on the heap while requests come, and give the memory back when they
    stop (a server worker's settings).

    The matrices here are thin (4 to 1024 by 3 or 4): a multi-threaded BLAS spends longer
    waking its threads than multiplying, and server workers already use the cores.
    """
    threadpool_limits(blas_threads, user_api="blas")
    ask_short_slices()
    if not keep_large_allocations():
        log.info("allocator tuning skipped: no glibc mallopt on this platform")
        return
    global _watching  # noqa: PLW0603 -- one watcher a process, however many apps it builds
    with _watching_lock:
        if _watching != os.getpid():  # a forked child has no thread: its pid differs
            _watching = os.getpid()
            release_when_quiet()


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


def release_when_quiet(
    check_seconds: float = TRIM_CHECK_SECONDS,
    quiet_cpu: float = QUIET_CPU,
    stop: threading.Event | None = None,
) -> threading.Thread | None:
    """Start a daemon thread that calls glibc's ``malloc_trim(0)`` once after each busy spell.

    What the heap keeps (:func:`keep_large_allocations`) is freed memory of every thread's
    arena, which glibc hands back only from the top of a heap and past 128 MiB: a burst of
    large requests left it held for good. ``malloc_trim(0)`` returns every free page of every
    arena; called after each request it would undo the tuning (the next request faults its
    pages in again), so it runs only when the process used under ``quiet_cpu`` of a core over
    the last ``check_seconds``, after a spell that used more.

    Measured on 2 cores with one worker serving a 256-unit model: 2 warm-up requests, 30
    sequential /predict and /gradients of 10,000 rows each (server CPU per request), then a
    burst of 8 clients x 10 of each; RSS from /proc/PID/status, two runs each. "Heap arrays"
    is :func:`keep_large_allocations` (the 32 MiB mmap and 128 MiB trim thresholds):

    ==========================  ========  ==============  =================  ============
    allocator                   base RSS  RSS after burst  lowest within 5 s  CPU/request
    ==========================  ========  ==============  =================  ============
    glibc defaults              142 MiB   284, 183 MiB    284, 183 MiB       51.2, 49.3 ms
    heap arrays, no trim        143 MiB   422, 424 MiB    422, 424 MiB       50.0, 49.7 ms
    heap arrays, trim if quiet  143 MiB   404, 386 MiB    285, 224 MiB       48.5, 47.5 ms
    trim after every request    139 MiB   279 MiB         279 MiB            1.8x latency
    ==========================  ========  ==============  =================  ============

    At 10,000 rows the heap arrays buy little (within the noise of this machine; the 40% is
    at 100,000 rows, IRIS_MAX_INSTANCES allows it), but they held 280 MiB more for good;
    trimming once the burst is over gives most of it back within 2 s at no measured cost.

    Returns the thread (it ends when ``stop`` is set), or None without glibc's malloc_trim.
    """
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    stopped = stop or threading.Event()

    def watch() -> None:
        busy = False
        cpu, wall = time.process_time(), time.monotonic()
        while not stopped.wait(check_seconds):
            cpu_now, wall_now = time.process_time(), time.monotonic()
            used = (cpu_now - cpu) / max(wall_now - wall, 1e-3)
            cpu, wall = cpu_now, wall_now
            if used >= quiet_cpu:
                busy = True
            elif busy:
                busy = False
                trim(0)

    thread = threading.Thread(target=watch, name="malloc-trim", daemon=True)
    thread.start()
    return thread


SERVING_SLICE_NS = 100_000
"""The CPU slice a server worker's threads ask of Linux's scheduler (EEVDF, 6.12 and later):
its shortest. A task with a shorter slice than the running one takes the CPU as soon as it
wakes (PREEMPT_SHORT) instead of waiting out the other's slice (1.4 ms by default on 2 CPUs):
a request that arrives while the training child (nice 19) or another process runs is read at
once."""
# Linux's system call numbers, by machine: sched_setattr(2), ioprio_set(2).
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1  # a thread, by its id


SCHED_RESET_ON_FORK = 0x40000000  # a bit sched_getscheduler(2) may add to the policy
SCHED_FLAG_RESET_ON_FORK = 0x01  # the same, as sched_setattr(2) takes it


def _syscall(numbers: dict[str, int]) -> tuple[int, Callable[..., int]] | None:
    """The system call of ``numbers`` for this machine, and libc's ``syscall``; None off
    64-bit Linux on x86_64 or arm64 (a 32-bit process on such a kernel has other numbers)."""
    number = numbers.get(os.uname().machine)
    if sys.platform != "linux" or number is None or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        found: Callable[..., int] = ctypes.CDLL(None).syscall
    except (OSError, AttributeError):
        return None
    return number, found


def threads() -> list[int]:
    """The ids of this process's threads (Linux), or [0]: the calling thread."""
    task = "/proc/self/task"
    return [int(t) for t in os.listdir(task)] if os.path.isdir(task) else [0]


def idle_io_priority(thread: int) -> bool:
    """Put ``thread`` (an id; 0: the caller) in Linux's idle I/O class: its disk reads and
    writes wait for everyone else's. Best effort: False where the kernel or machine lacks it."""
    call = _syscall(_IOPRIO_SET)
    if call is None:
        return False
    number, syscall = call
    priority = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT
    return syscall(number, IOPRIO_WHO_PROCESS, thread, priority) == 0


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]


def ask_short_slices(slice_ns: int = SERVING_SLICE_NS) -> int:
    """Ask the scheduler for a ``slice_ns`` slice on every thread of this process (threads
    started later inherit it from their creator), keeping each thread's policy and nice;
    how many threads took it. Best effort: 0 off 64-bit Linux; kernels before 6.12 take the
    request and ignore it."""
    call = _syscall(_SCHED_SETATTR)
    if call is None:
        return 0
    number, syscall = call
    taken = 0
    for tid in threads():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            policy = os.sched_getscheduler(tid)
            attr = _SchedAttr(
                size=ctypes.sizeof(_SchedAttr),
                sched_policy=policy & ~SCHED_RESET_ON_FORK,  # SCHED_OTHER, or SCHED_IDLE
                sched_flags=SCHED_FLAG_RESET_ON_FORK if policy & SCHED_RESET_ON_FORK else 0,
                sched_nice=os.getpriority(os.PRIO_PROCESS, tid),
                sched_runtime=slice_ns,
            )
            taken += syscall(number, tid, ctypes.byref(attr), 0) == 0
    return taken


def cpu_wanted() -> Callable[[], bool] | None:
    """A test, for the calling thread, of whether another task wants a CPU: this thread was
    preempted since the test last ran (``getrusage``'s involuntary switches of the thread),
    or more tasks are runnable at this instant than the machine has CPUs (the fourth field of
    ``/proc/loadavg``, "running/total", this thread included), so one waits on another CPU.
    Microseconds a call (a system call and a ``pread`` of an open file); None off Linux."""
    thread = getattr(resource, "RUSAGE_THREAD", None)  # Linux's
    if thread is None:
        return None
    try:
        fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    cpus = os.cpu_count() or 1
    switches = resource.getrusage(thread).ru_nivcsw

    def wanted() -> bool:
        nonlocal switches
        before, switches = switches, resource.getrusage(thread).ru_nivcsw
        if switches != before:
            return True
        return int(os.pread(fd, 128, 0).split()[3].split(b"/")[0]) > cpus

    try:
        wanted()
    except (OSError, IndexError, ValueError):
        os.close(fd)
        return None
    return wanted
