"""The training child: ``python -m service.worker HEARTBEAT TIMEOUT STORES...``, job on stdin.

``STORES`` says how to open the server's stores (``files JOBS_DB MODELS_DIR``, or
``postgresql`` with ``IRIS_DATABASE_URL`` in the environment): service.stores.child_backend.

It trains with model/, writes progress and heartbeats into the job row, stores the new
version, activates it when asked, the quality gate passes and the job is still wanted, and
ends the row. It exits on its own when the server that started it is gone; a cancel (or a
row that stopped being active) stops training at the next epoch boundary.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from model.errors import IrisModelError, TrainingCancelledError
from model.train import EpochStats, Hyperparameters, train
from service.job_store import JobError, JobsBusyError
from service.payload import decode
from service.stores import Backend, JobStoreLike, child_backend
from service.tuning import (
    ask_short_slices,
    cpu_wanted,
    idle_io_priority,
    keep_large_allocations,
    threads,
)

PARENT_GONE_EXIT = 3
# The child's writes wait this long for a locked jobs database, then retry (heartbeats skip a
# beat instead), so the parent check in the heartbeat loop stays timely.
BUSY_SECONDS = 2.0
# How long the outcome of a finished training (and the check before activating) is retried
# while the jobs database stays locked.
DB_RETRY_SECONDS = 60.0
T = TypeVar("T")
# Training yields to serving: the lowest nice value, for every thread of the child (beside
# SCHED_IDLE, for kernels and sandboxes that refuse the policy).
TRAINING_NICE = 19
# Between SGD steps, at most this often, training looks whether another task wants a CPU;
# while one does, it sleeps, its naps doubling from the shortest to the longest while that
# lasts and halving again as it trains; after each nap it trains for at least the share
# below of the time, so a job still ends on a machine kept busy (see YieldToWaiting).
YIELD_CHECK_SECONDS = 0.0005
YIELD_NAPS_SECONDS = (0.001, 0.1)
YIELD_MIN_SHARE = 0.05


class TimeLimitError(Exception):
    """Training ran past IRIS_MAX_TRAINING_SECONDS (checked at every epoch boundary)."""

    def __init__(self, epoch: int, elapsed: float, limit: float, yielded: float) -> None:
        self.epoch = epoch
        waited = f", {yielded:.1f} s of it waiting for busy CPUs" if yielded >= 0.05 else ""
        super().__init__(
            f"training stopped after epoch {epoch}: it ran {elapsed:.1f} s{waited}, past the "
            f"limit of {limit:g} s (IRIS_MAX_TRAINING_SECONDS); use fewer epochs or rows, or "
            "raise it"
        )


def retrying(call: Callable[[], T], seconds: float = DB_RETRY_SECONDS) -> T:
    """``call()``, again while the jobs database is busy, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except JobsBusyError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


class Heartbeat(threading.Thread):
    """Writes liveness and the latest progress every ``interval`` seconds; watches the parent."""

    def __init__(self, jobs: JobStoreLike, job_id: str, interval: float, parent: int) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.jobs = jobs
        self.job_id = job_id
        self.interval = interval
        self.parent = parent
        self.progress: dict[str, Any] | None = None
        self.cancel = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            if os.getppid() != self.parent:
                with contextlib.suppress(JobError):
                    self.jobs.finish(
                        self.job_id,
                        "failed",
                        error="interrupted: the server that started it stopped",
                    )
                os._exit(PARENT_GONE_EXIT)
            try:
                active, cancel = self.jobs.heartbeat(self.job_id, self.progress)
            except JobError:
                continue  # a busy database: training goes on, the next beat tries again
            if cancel or not active:
                self.cancel.set()


class YieldToWaiting:
    """Called between SGD steps: while another task wants a CPU (service.tuning.cpu_wanted:
    training was preempted since it last looked, or a task waits on another CPU), sleep, so
    that the training's CPU goes idle and the kernel gives it to that task at once.

    ``SCHED_IDLE`` alone does not do this. Taking the CPU back from an idle-policy task costs
    the task that wakes, and a CPU running only such a task is not idle to the kernel's
    balancer: a request queued behind another process on the other CPU waits for the
    periodic rebalance (milliseconds) instead of moving to the CPU training holds. On 2
    cores with one busy process beside the server, one-row /predict at 8 connections had p99
    2.4 ms with no job, 5.6 ms while a job trained under SCHED_IDLE, and 2.5 ms while the
    same job was stopped (SIGSTOP): the harm is training holding a CPU, whatever its
    priority. The naps grow while the want lasts, so that a busy machine is not woken a
    thousand times a second to be asked again. After a nap, training goes on for at least
    ``min_share`` of the time before it looks again (5 ms after a 100 ms nap), so a job still
    ends on a machine that serving keeps busy for good, at that pace. So training runs on
    CPUs nobody wants, and little on a busy machine (``yielded_seconds`` in the job's
    metrics counts the naps); once ``stop()`` (a cancel, the time limit) says so, no nap
    starts, and training runs to the epoch's end, where it stops.
    """

    def __init__(
        self,
        wanted: Callable[[], bool],
        stop: Callable[[], bool],
        *,
        check_seconds: float = YIELD_CHECK_SECONDS,
        naps_seconds: tuple[float, float] = YIELD_NAPS_SECONDS,
        min_share: float = YIELD_MIN_SHARE,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.wanted = wanted
        self.stop = stop
        self.check_seconds = check_seconds
        self.shortest, self.longest = naps_seconds
        self.nap = self.shortest
        self.min_share = min_share
        self.clock = clock
        self.sleep = sleep
        self.next_check = 0.0
        self.yielded_seconds = 0.0

    def __call__(self) -> None:
        now = self.clock()
        if now < self.next_check:
            return
        if not self.wanted() or self.stop():
            self.nap = max(self.shortest, self.nap / 2)
            self.next_check = now + self.check_seconds
            return
        self.sleep(self.nap)
        after = self.clock()
        self.yielded_seconds += after - now
        # Train for at least min_share of the nap and the training together before the next
        # look; the next nap, if a CPU is still wanted then, is twice as long.
        train = (after - now) * self.min_share / (1 - self.min_share)
        self.next_check = after + max(self.check_seconds, train)
        self.nap = min(self.longest, self.nap * 2)


def finish(jobs: JobStoreLike, job_id: str, status: str, **fields: Any) -> bool:
    """End the job row, retried while the database is locked (the training is not lost)."""
    return retrying(lambda: jobs.finish(job_id, status, **fields))


def still_wanted(jobs: JobStoreLike, job_id: str) -> bool:
    """The job is still running and nobody asked to cancel it."""
    active, cancel = retrying(lambda: jobs.heartbeat(job_id, None))
    return active and not cancel


def last_epoch(beat: Heartbeat, epoch: int) -> dict[str, Any]:
    """The epoch a stopped job ends at, with its figures when the heartbeat has them."""
    progress = beat.progress
    if progress is None or progress.get("epoch") != epoch:
        return {"epoch": epoch}
    return {"epoch": epoch, "progress": json.dumps(progress)}


def run(payload: bytes, backend: Backend, interval: float, parent: int) -> int:
    header, dataset = decode(payload)
    job_id = header["job_id"]
    jobs, store = backend.jobs, backend.models
    if not retrying(lambda: jobs.start(job_id, os.getpid())):  # cancelled, or given up on
        finish(jobs, job_id, "cancelled", error="cancelled before training started")
        return 0
    beat = Heartbeat(jobs, job_id, interval, parent)
    beat.start()

    hp = Hyperparameters(**header["hyperparameters"])
    data_sha256 = dataset.sha256()  # of the rows as sent, before training reads them
    started = time.perf_counter()
    given = header.get("max_training_seconds")
    limit: float = math.inf if given is None else given

    def overran() -> float | None:
        """The seconds training has run, once past the limit."""
        elapsed = time.perf_counter() - started
        return elapsed if elapsed > limit else None

    def on_epoch(stats: EpochStats) -> None:
        beat.progress = asdict(stats)
        elapsed = overran()
        if elapsed is not None and stats.epoch < stats.epochs:
            raise TimeLimitError(stats.epoch, elapsed, limit, yielding.yielded_seconds)

    # cpu_wanted() is of the calling thread: this one, which trains.
    yielding = YieldToWaiting(
        cpu_wanted() or (lambda: False), lambda: overran() is not None or beat.cancel.is_set()
    )
    try:
        result = train(
            dataset, hp, on_epoch=on_epoch, should_stop=beat.cancel.is_set, between_steps=yielding
        )
        seconds = time.perf_counter() - started
        gate = header["min_validation_accuracy"]
        accuracy = result.metrics.get("validation_accuracy")
        passed = gate is None or (accuracy is not None and accuracy >= gate)
        info = result.record(hp) | {
            "data": header["dataset"],
            "data_sha256": data_sha256,
            "training_seconds": seconds,
            "job_id": job_id,
            "note": header.get("note"),
        }
        if not still_wanted(jobs, job_id):
            raise TrainingCancelledError(result.history[-1].epoch)
        version = store.save(result.model, info)
        # A job that ended meanwhile (cancelled, or failed by a server shutting down) must
        # not change the served model: check again right before CURRENT moves.
        activated = bool(header["activate"] and passed) and still_wanted(jobs, job_id)
        if activated:
            store.activate(version)
        metrics = result.metrics | {
            "training_seconds": seconds,
            "yielded_seconds": yielding.yielded_seconds,
        }
        if not passed:
            metrics["quality_gate"] = (
                f"validation_accuracy {accuracy} is below min_validation_accuracy {gate}: "
                "stored, not activated"
            )
        beat.done.set()
        finish(
            jobs,
            job_id,
            "succeeded",
            model_version=version,
            activated=int(activated),
            metrics=metrics,
            epoch=result.history[-1].epoch,
            progress=json.dumps(asdict(result.history[-1])),
        )
    except TimeLimitError as error:
        beat.done.set()
        finish(jobs, job_id, "failed", error=str(error), **last_epoch(beat, error.epoch))
    except TrainingCancelledError as error:
        beat.done.set()
        # the record's epoch is the one the message names: the last one trained
        finish(jobs, job_id, "cancelled", error=str(error), **last_epoch(beat, error.epoch))
    except IrisModelError as error:
        beat.done.set()
        finish(jobs, job_id, "failed", error=str(error))
    except Exception as error:
        beat.done.set()
        traceback.print_exc()
        finish(jobs, job_id, "failed", error=f"internal error: {type(error).__name__}: {error}")
        return 1
    return 0


def yield_to_serving() -> int:
    """Run this process at the lowest CPU and I/O priority; the nice value taken.

    On a machine whose cores serving keeps busy, training takes what serving leaves (a
    heartbeat needs microseconds, and a live child is never reaped): nice 19 and Linux's
    ``SCHED_IDLE`` policy on every thread, under which any other task that wakes takes the
    CPU at once, and the idle I/O class. Linux keeps these per thread, so each thread so far
    is set (a BLAS may have started its own); threads started later inherit them. The child
    stays in the server's session (a process group of its own, service/launcher.py): Linux's
    autogroup scheduling weighs each session as a whole, so in a session of its own its
    group would compete with the server's as an equal whatever its threads' policy said;
    inside the server's group, SCHED_IDLE decides.
    """
    for thread in threads():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, TRAINING_NICE)
        if hasattr(os, "SCHED_IDLE"):  # Linux
            with contextlib.suppress(OSError):
                os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
        idle_io_priority(thread)
    ask_short_slices()  # when it does run, it gives the CPU back soonest
    return os.getpriority(os.PRIO_PROCESS, 0)


def main() -> int:
    interval, timeout = float(sys.argv[1]), float(sys.argv[2])
    yield_to_serving()
    keep_large_allocations()  # the BLAS threads come from the environment the server set
    parent = os.getppid()
    payload = sys.stdin.buffer.read()
    with child_backend(sys.argv[3:], timeout, busy_seconds=BUSY_SECONDS) as backend:
        return run(payload, backend, interval, parent)


if __name__ == "__main__":
    sys.exit(main())
