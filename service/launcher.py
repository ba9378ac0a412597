"""The training launcher: a child process per job, watched until it ends.

The child (``python -m service.worker``) gets the job on its standard input
(:mod:`service.payload`) and opens the server's own stores (:mod:`service.stores`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from model.data import Dataset
from service.job_store import JobError, JobSpec, JobsUnavailableError
from service.payload import encode

# Read by OpenBLAS, MKL and OpenMP when NumPy loads in the training child.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
# Seconds past IRIS_MAX_TRAINING_SECONDS after which a child that did not stop is killed
# (it is started at launch: its NumPy import and data loading count against the limit).
KILL_GRACE_SECONDS = 30.0


class Launcher:
    """Starts training children and marks their job failed if they exit without finishing."""

    def __init__(
        self,
        jobs: Any,
        store_args: list[str],
        heartbeat_seconds: float = 0.25,
        on_finish: Callable[[dict[str, Any]], None] | None = None,
        blas_threads: int = 1,
        *,
        max_training_seconds: float | None = None,
        child_env: dict[str, str] | None = None,
    ) -> None:
        self.jobs = jobs
        self.max_training_seconds = max_training_seconds
        self.blas_threads = blas_threads
        self.on_finish = on_finish
        self.store_args = store_args  # how the child opens the same stores
        self.child_env = dict(child_env or {})
        self.heartbeat_seconds = heartbeat_seconds
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()

    def launch(self, job_id: str, spec: JobSpec, dataset: Dataset) -> None:
        payload = encode(job_id, spec, dataset, self.max_training_seconds)
        threads = dict.fromkeys(BLAS_THREAD_VARIABLES, str(self.blas_threads))
        try:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.worker",
                    str(self.heartbeat_seconds),
                    str(self.jobs.heartbeat_timeout),
                    *self.store_args,
                ],
                stdin=subprocess.PIPE,
                env=os.environ | self.child_env | threads,
                # A process group of its own: a Ctrl-C in the server's terminal is for the server.
                # The same session: its autogroup is the server's (service/worker.py).
                process_group=0,
            )
        except OSError as error:
            message = f"cannot start the training process: {error}"
            self.jobs.finish(job_id, "failed", error=message)
            raise JobsUnavailableError(message) from error
        with self.lock:
            self.children[job_id] = child
        threading.Thread(
            target=self._feed_and_watch,
            args=(job_id, child, payload),
            daemon=True,
            name=f"job-{job_id[:8]}",
        ).start()

    def _feed_and_watch(self, job_id: str, child: subprocess.Popen[bytes], payload: bytes) -> None:
        try:
            assert child.stdin is not None
            try:
                child.stdin.write(payload)
            except BrokenPipeError:
                pass  # the child died before reading: its exit status says why
            finally:
                with contextlib.suppress(OSError):
                    child.stdin.close()
            code, overran = self._wait(child)
        finally:
            with self.lock:
                self.children.pop(job_id, None)
        if overran:
            reason = (
                f"ran {self.max_training_seconds:g} s (IRIS_MAX_TRAINING_SECONDS) plus "
                f"{KILL_GRACE_SECONDS:g} s without stopping, and was killed"
            )
        elif code < 0:
            reason = f"killed by signal {signal.Signals(-code).name}"
        else:
            reason = f"exited with status {code}"
        with contextlib.suppress(JobError):
            self.jobs.finish(
                job_id, "failed", error=f"the training process {reason} before it finished"
            )
            if self.on_finish is not None:
                self.on_finish(self.jobs.get(job_id))

    def _wait(self, child: subprocess.Popen[bytes]) -> tuple[int, bool]:
        """The child's exit status, and whether it was killed for overrunning the limit.

        The child stops itself at the first epoch boundary past the limit; one that does
        not (an epoch that takes minutes, a stopped process) is killed after the grace. The
        wait blocks in waitpid and the kill is a timer: ``Popen.wait(timeout)`` would poll
        every 50 ms, taking the GIL from the event loop each time (p99 of one-row
        predictions at 8 connections 3-5x idle while a job ran on a loaded machine).
        """
        if self.max_training_seconds is None:
            return child.wait(), False
        overran = threading.Event()

        def kill() -> None:
            overran.set()
            child.kill()

        timer = threading.Timer(self.max_training_seconds + KILL_GRACE_SECONDS, kill)
        timer.daemon = True
        timer.start()
        try:
            return child.wait(), overran.is_set()
        finally:
            timer.cancel()

    def shutdown(self, timeout: float = 2.0) -> None:
        """Stop every child of this worker; their jobs end failed as interrupted."""
        with self.lock:
            children = dict(self.children)
        for job_id, child in children.items():
            with contextlib.suppress(JobError):
                self.jobs.finish(job_id, "failed", error="interrupted: the server shut down")
            child.terminate()
        deadline = time.monotonic() + timeout
        for child in children.values():
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
