"""Training jobs: rows in SQLite (WAL) shared by every worker, and the child process that trains.

A job row moves queued -> running -> succeeded | failed | cancelled. The training child
writes a heartbeat (with the latest progress) into its row a few times a second; a queued or
running row whose heartbeat is older than ``heartbeat_timeout`` belongs to a process that
died, and is marked failed by whoever looks at it next. At most one job is queued or running
at a time across all workers: the check and the insert share one ``BEGIN IMMEDIATE``.

Only the standard library and model/ are imported here: the child imports this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model.data import Dataset

# Read by OpenBLAS, MKL and OpenMP when NumPy loads in the training child.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")
TERMINAL = ("succeeded", "failed", "cancelled")
QUEUED_GRACE = 30.0  # seconds a queued job may wait for its process to start

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER NOT NULL,
    progress TEXT,
    hyperparameters TEXT NOT NULL,
    dataset TEXT NOT NULL,
    activate INTEGER NOT NULL,
    min_validation_accuracy REAL,
    metrics TEXT,
    model_version TEXT,
    activated INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
"""


class JobError(Exception):
    """Base class of the job store's errors."""


class JobConflictError(JobError):
    """Another job is queued or running."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"training job {job_id} is still running; one job runs at a time")
        self.job_id = job_id


class JobNotFoundError(JobError, LookupError):
    pass


class JobFinishedError(JobError):
    """The job has already ended (it cannot be cancelled)."""


class JobActiveError(JobError):
    """The job is still queued or running (its record cannot be deleted yet)."""


class JobsUnavailableError(JobError):
    """The jobs database cannot be opened or written (read-only data directory, full disk)."""


@dataclass(frozen=True)
class JobSpec:
    """What a training job was asked to do."""

    hyperparameters: dict[str, Any]
    dataset: dict[str, Any]  # {"source": "iris" | "request", "rows": n}
    activate: bool = True
    min_validation_accuracy: float | None = None


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


class JobStore:
    """The jobs table; every call opens its own short connection, so any thread may call."""

    def __init__(self, path: Path, heartbeat_timeout: float = 5.0) -> None:
        self.path = path
        self.heartbeat_timeout = heartbeat_timeout

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=15.0, isolation_level=None)
        except sqlite3.Error as error:
            raise JobsUnavailableError(
                f"cannot open the jobs database {self.path}: {error}{self.diagnosis()}"
            ) from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 15000")
            yield db
        except sqlite3.DatabaseError as error:  # OperationalError, or a damaged file
            raise JobsUnavailableError(
                f"the jobs database {self.path}: {error}{self.diagnosis()}"
            ) from None
        finally:
            db.close()

    def diagnosis(self) -> str:
        """What SQLite's terse errors ('disk I/O error', 'unable to open') usually mean."""
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return ""
        if fs.f_flag & os.ST_RDONLY:
            return f" (the data directory {self.path.parent} is on a read-only file system)"
        if fs.f_bavail * fs.f_frsize < 256 * 1024:
            return f" (no space left on the device of {self.path.parent})"
        return ""

    def initialize(self) -> None:
        with self.connect() as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _reap(self, db: sqlite3.Connection, now: float) -> None:
        """Fail running jobs whose process stopped sending heartbeats, and queued jobs whose
        process never started (they get QUEUED_GRACE more: a child imports NumPy first)."""
        db.execute(
            "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? "
            "WHERE (status = 'running' AND heartbeat_at < ?) "
            "OR (status = 'queued' AND heartbeat_at < ?)",
            (
                now,
                "interrupted: the training process stopped sending heartbeats "
                "(it or its server died)",
                now - self.heartbeat_timeout,
                now - self.heartbeat_timeout - QUEUED_GRACE,
            ),
        )

    def reap(self) -> None:
        with self.transaction() as db:
            self._reap(db, time.time())

    def create(self, spec: JobSpec) -> dict[str, Any]:
        """Insert a queued job, or raise JobConflictError if one is queued or running."""
        now = time.time()
        job_id = uuid.uuid4().hex
        with self.transaction() as db:
            self._reap(db, now)
            running = db.execute(
                "SELECT job_id FROM jobs WHERE status IN ('queued', 'running') LIMIT 1"
            ).fetchone()
            if running is not None:
                raise JobConflictError(running["job_id"])
            db.execute(
                "INSERT INTO jobs (job_id, status, created_at, heartbeat_at, epochs, "
                "hyperparameters, dataset, activate, min_validation_accuracy) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    now,
                    now,
                    spec.hyperparameters["epochs"],
                    json.dumps(spec.hyperparameters),
                    json.dumps(spec.dataset),
                    int(spec.activate),
                    spec.min_validation_accuracy,
                ),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        with self.transaction() as db:
            self._reap(db, time.time())
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no training job {job_id}")
        return job_view(row)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self.transaction() as db:
            self._reap(db, time.time())
            rows = db.execute(
                "SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
            ).fetchall()
        return [job_view(row) for row in rows]

    def request_cancel(self, job_id: str) -> dict[str, Any]:
        with self.transaction() as db:
            self._reap(db, time.time())
            row = db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no training job {job_id}")
            if row["status"] in TERMINAL:
                raise JobFinishedError(f"training job {job_id} has already {row['status']}")
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Remove an ended job's record; a queued or running job must be cancelled first."""
        with self.transaction() as db:
            self._reap(db, time.time())
            row = db.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"no training job {job_id}")
            if row["status"] not in TERMINAL:
                raise JobActiveError(
                    f"training job {job_id} is still {row['status']}: cancel it first "
                    f"(POST /train/{job_id}/cancel)"
                )
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    # -- written by the training child and by the worker that watches it ------------------

    def start(self, job_id: str, pid: int) -> bool:
        """Mark the job running; False if it is no longer queued (cancelled or reaped)."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, pid = ? "
                "WHERE job_id = ? AND status = 'queued' AND cancel_requested = 0",
                (now, now, pid, job_id),
            )
            return cursor.rowcount == 1

    def heartbeat(self, job_id: str, progress: dict[str, Any] | None) -> tuple[bool, bool]:
        """Record liveness and progress; returns (still active, cancel requested)."""
        with self.transaction() as db:
            if progress is None:
                db.execute(
                    "UPDATE jobs SET heartbeat_at = ? WHERE job_id = ? AND status = 'running'",
                    (time.time(), job_id),
                )
            else:
                db.execute(
                    "UPDATE jobs SET heartbeat_at = ?, epoch = ?, progress = ? "
                    "WHERE job_id = ? AND status = 'running'",
                    (time.time(), progress["epoch"], json.dumps(progress), job_id),
                )
            row = db.execute(
                "SELECT status, cancel_requested FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        return row is not None and row["status"] == "running", bool(row and row["cancel_requested"])

    def finish(self, job_id: str, status: str, **fields: Any) -> bool:
        """Move an active job to a terminal status; False if it had already ended."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        columns = {"status": status, "finished_at": time.time()}
        for key, value in fields.items():
            columns[key] = json.dumps(value) if key == "metrics" else value
        assignments = ", ".join(f"{key} = ?" for key in columns)
        with self.transaction() as db:
            cursor = db.execute(
                f"UPDATE jobs SET {assignments} WHERE job_id = ? "
                "AND status IN ('queued', 'running')",
                (*columns.values(), job_id),
            )
            return cursor.rowcount == 1


def job_view(row: sqlite3.Row) -> dict[str, Any]:
    """A job row as the API shows it."""
    progress = json.loads(row["progress"]) if row["progress"] else {}
    progress.update(epoch=row["epoch"], epochs=row["epochs"])
    return {
        "job_id": row["job_id"],
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "progress": progress,
        "hyperparameters": json.loads(row["hyperparameters"]),
        "dataset": json.loads(row["dataset"]),
        "activate": bool(row["activate"]),
        "min_validation_accuracy": row["min_validation_accuracy"],
        "metrics": json.loads(row["metrics"]) if row["metrics"] else None,
        "model_version": row["model_version"],
        "activated": bool(row["activated"]),
        "error": row["error"],
    }


# -- launching ------------------------------------------------------------------------------


def encode_payload(job_id: str, spec: JobSpec, dataset: Dataset, models_dir: Path) -> bytes:
    """Everything the child needs, as one npz on its standard input."""
    header = {
        "job_id": job_id,
        "hyperparameters": spec.hyperparameters,
        "dataset": spec.dataset,
        "activate": spec.activate,
        "min_validation_accuracy": spec.min_validation_accuracy,
        "models_dir": str(models_dir),
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        raw=dataset.raw,
        y=dataset.y,
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )
    return buffer.getvalue()


class Launcher:
    """Starts training children and marks their job failed if they exit without finishing."""

    def __init__(
        self,
        jobs: JobStore,
        models_dir: Path,
        heartbeat_seconds: float = 0.25,
        on_finish: Callable[[dict[str, Any]], None] | None = None,
        blas_threads: int = 1,
    ) -> None:
        self.jobs = jobs
        self.blas_threads = blas_threads
        self.on_finish = on_finish
        self.models_dir = models_dir
        self.heartbeat_seconds = heartbeat_seconds
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.lock = threading.Lock()

    def launch(self, job_id: str, spec: JobSpec, dataset: Dataset) -> None:
        payload = encode_payload(job_id, spec, dataset, self.models_dir)
        try:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "service.worker",
                    str(self.jobs.path),
                    str(self.heartbeat_seconds),
                    str(self.jobs.heartbeat_timeout),
                ],
                stdin=subprocess.PIPE,
                env=os.environ | dict.fromkeys(BLAS_THREAD_VARIABLES, str(self.blas_threads)),
                start_new_session=True,  # a Ctrl-C in the server's terminal is for the server
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
            code = child.wait()
        finally:
            with self.lock:
                self.children.pop(job_id, None)
        if code < 0:
            reason = f"killed by signal {signal.Signals(-code).name}"
        else:
            reason = f"exited with status {code}"
        with contextlib.suppress(JobError):
            self.jobs.finish(
                job_id, "failed", error=f"the training process {reason} before it finished"
            )
            if self.on_finish is not None:
                self.on_finish(self.jobs.get(job_id))

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
