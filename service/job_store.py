"""Training jobs in SQLite (WAL), shared by every worker of one machine: the embedded job store.

A job row moves queued -> running -> succeeded | failed | cancelled. The training child
writes a heartbeat (with the latest progress) into its row a few times a second; a queued or
running row whose heartbeat is older than ``heartbeat_timeout`` belongs to a process that
died, and is marked failed by whoever looks at it next. At most one job is queued or running
at a time across all workers: the check and the insert share one ``BEGIN IMMEDIATE``.

Only the standard library and model/ are imported here: the training child imports this
module. The PostgreSQL job store (service.postgres.jobs) has the same methods and errors.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.persistence import pid_alive

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
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    note TEXT
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
"""
# Columns added after the first release, each with its definition: a jobs database made
# before them gets them on the next start (:meth:`JobStore.initialize`).
ADDED_COLUMNS = {"note": "TEXT"}


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
    note: str | None = None


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


class JobsBusyError(JobsUnavailableError):
    """The jobs database stayed locked by another connection longer than a read may wait."""


def is_busy(error: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


class JobStore:
    """The jobs table; every call opens its own short connection, so any thread may call.

    Writes wait up to ``busy_seconds`` for the lock. Reads (``get``, ``recent``) are plain
    read transactions, which in WAL mode no writer blocks; when the file is locked for
    readers too (``locking_mode=EXCLUSIVE``, a recovery) they wait ``read_busy_seconds`` at
    most and raise :class:`JobsBusyError`. Reaping is a separate write that is skipped, not
    waited for, while the database is locked.
    """

    def __init__(
        self,
        path: Path,
        heartbeat_timeout: float = 5.0,
        busy_seconds: float = 15.0,
        read_busy_seconds: float = 0.5,
    ) -> None:
        self.path = path
        self.heartbeat_timeout = heartbeat_timeout
        self.busy_seconds = busy_seconds
        self.read_busy_seconds = read_busy_seconds

    @contextlib.contextmanager
    def connect(self, busy_seconds: float | None = None) -> Iterator[sqlite3.Connection]:
        wait = self.busy_seconds if busy_seconds is None else busy_seconds
        try:
            db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        except sqlite3.Error as error:
            raise JobsUnavailableError(
                f"cannot open the jobs database {self.path}: {error}{self.diagnosis()}"
            ) from None
        try:
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            yield db
        except sqlite3.DatabaseError as error:  # OperationalError, or a damaged file
            if is_busy(error):
                raise JobsBusyError(
                    f"the jobs database is busy (locked by another connection for more than "
                    f"{wait:g} s): {error}; try again in a moment"
                ) from None
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
        # Created private before SQLite opens it; SQLite gives -wal and -shm the same mode.
        with contextlib.suppress(FileExistsError, OSError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self.connect() as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
        with self.transaction() as db:  # one worker at a time adds what an older file lacks
            present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            for column, definition in ADDED_COLUMNS.items():
                if column not in present:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")

    @contextlib.contextmanager
    def transaction(self, busy_seconds: float | None = None) -> Iterator[sqlite3.Connection]:
        with self.connect(busy_seconds) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _reap(self, db: sqlite3.Connection, now: float) -> None:
        """Fail running jobs whose process stopped sending heartbeats and is gone, and queued
        jobs whose process never started (they get QUEUED_GRACE more: a child imports NumPy
        first). A running job whose child is alive on this host is kept: a heartbeat that
        could not be written (a locked database) is not a dead child."""
        stale = db.execute(
            "SELECT job_id, status, pid FROM jobs "
            "WHERE (status = 'running' AND heartbeat_at < ?) "
            "OR (status = 'queued' AND heartbeat_at < ?)",
            (now - self.heartbeat_timeout, now - self.heartbeat_timeout - QUEUED_GRACE),
        ).fetchall()
        for row in stale:
            if row["status"] == "running" and self.child_alive(row["pid"]):
                continue
            db.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? "
                "WHERE job_id = ? AND status = ?",
                (
                    now,
                    "interrupted: the training process stopped sending heartbeats "
                    "(it or its server died)",
                    row["job_id"],
                    row["status"],
                ),
            )

    def child_alive(self, pid: int | None) -> bool:
        """The training child ``pid`` of this database still runs (SQLite is one host)."""
        if pid is None:
            return False
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            return not Path("/proc/self").exists() and pid_alive(pid)
        except OSError:
            return pid_alive(pid)
        # A pid reused by another process (a restarted container) does not count.
        return b"service.worker" in command and os.fsencode(self.path) in command.split(b"\0")

    def try_reap(self) -> None:
        """Reap if the database is free right now; skipped, never waited for, when locked."""
        with contextlib.suppress(JobsBusyError), self.connect(busy_seconds=0.0) as db:
            now = time.time()
            stale = db.execute(
                "SELECT 1 FROM jobs WHERE (status = 'running' AND heartbeat_at < ?) "
                "OR (status = 'queued' AND heartbeat_at < ?) LIMIT 1",
                (now - self.heartbeat_timeout, now - self.heartbeat_timeout - QUEUED_GRACE),
            ).fetchone()
            if stale is None:
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                self._reap(db, now)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

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
                "hyperparameters, dataset, activate, min_validation_accuracy, note) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    now,
                    now,
                    spec.hyperparameters["epochs"],
                    json.dumps(spec.hyperparameters),
                    json.dumps(spec.dataset),
                    int(spec.activate),
                    spec.min_validation_accuracy,
                    spec.note,
                ),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        self.try_reap()
        with self.connect(self.read_busy_seconds) as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no training job {job_id}")
        return job_view(row)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        self.try_reap()
        with self.connect(self.read_busy_seconds) as db:
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


def job_view(
    row: Any,
    when: Callable[[Any], str | None] = iso,
    document: Callable[[Any], Any] = json.loads,
) -> dict[str, Any]:
    """A job row as the API shows it, for either job store: ``when`` turns the store's
    timestamps into ISO text and ``document`` reads its JSON columns."""
    progress = dict(document(row["progress"])) if row["progress"] else {}
    progress.update(epoch=row["epoch"], epochs=row["epochs"])
    return {
        "job_id": row["job_id"],
        "status": row["status"],
        "created_at": when(row["created_at"]),
        "started_at": when(row["started_at"]),
        "finished_at": when(row["finished_at"]),
        "progress": progress,
        "hyperparameters": document(row["hyperparameters"]),
        "dataset": document(row["dataset"]),
        "activate": bool(row["activate"]),
        "min_validation_accuracy": row["min_validation_accuracy"],
        "metrics": document(row["metrics"]) if row["metrics"] else None,
        "model_version": row["model_version"],
        "activated": bool(row["activated"]),
        "error": row["error"],
        "cancel_requested": bool(row["cancel_requested"]),
        # a database older than the column (read-only, so never migrated) has no note
        "note": row["note"] if "note" in row.keys() else None,  # noqa: SIM118
    }
