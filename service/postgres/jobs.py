"""Training jobs in PostgreSQL: the methods, states and views of ``service.job_store.JobStore``.

One job at a time across every replica is the partial unique index ``jobs_one_active``: a
second queued or running row cannot be inserted, so of N concurrent creates exactly one
commits and the others get :class:`~service.job_store.JobConflictError` naming the job that holds
the slot. There is no check-then-insert to race.

Times come from the database server's clock (``clock_timestamp()``), so replicas whose clocks
disagree still agree on whose heartbeat is stale. A queued or running job whose heartbeat is
older than ``heartbeat_timeout`` (plus ``QUEUED_GRACE`` while queued) is marked failed by the
next call of any replica that looks at jobs (and by :meth:`PostgresJobStore.reap`, which a
replica may call periodically), so a job whose replica died never stays running.

Each row records the replica that accepted it (``accepted_by``, the host name unless given)
and the host and pid of its training process (``run_by``), for diagnosis; the API view is
exactly :func:`service.job_store.job_view`'s.

A database that cannot be reached raises :class:`~service.job_store.JobsUnavailableError`,
whose message names neither the database's address nor its user (it may reach an anonymous
client as a 503): where and why go to the log.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from service.job_store import (
    QUEUED_GRACE,
    TERMINAL,
    JobActiveError,
    JobConflictError,
    JobFinishedError,
    JobNotFoundError,
    JobSpec,
    JobsUnavailableError,
)
from service.job_store import job_view as shared_view
from service.postgres import migrations
from service.postgres.connection import (
    Connection,
    Database,
    DatabaseUnavailableError,
)

INTERRUPTED = "interrupted: the training process stopped sending heartbeats (it or its server died)"
# What finish() may set besides status, and how each value is stored.
_JSON_FIELDS = frozenset({"metrics", "progress"})
_FINISH_FIELDS = frozenset({"model_version", "activated", "error", "epoch", "pid"}) | _JSON_FIELDS


class PostgresJobStore:
    """The jobs table; the methods of ``JobStore``, callable from any thread."""

    def __init__(
        self,
        database: Database | str,
        heartbeat_timeout: float = 5.0,
        instance: str | None = None,
    ) -> None:
        self._owns_database = not isinstance(database, Database)
        self.db = database if isinstance(database, Database) else Database(database)
        self.heartbeat_timeout = heartbeat_timeout
        self.instance = instance or socket.gethostname()
        self.where = self.db.where  # for the log only

    def close(self) -> None:
        if self._owns_database:
            self.db.close()

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        try:
            with self.db.connection() as conn:
                yield conn
        except DatabaseUnavailableError:  # the connection logged where and why
            raise JobsUnavailableError("the jobs database is unavailable") from None
        except psycopg.Error as error:
            self.db.refused("the jobs database", error)
            raise JobsUnavailableError(
                "the jobs database refused the query (the server log has the details)"
            ) from None

    def initialize(self) -> int:
        """Create or upgrade the schema (safe when replicas start at once); its version."""
        with self.connect() as conn:
            return migrations.apply(conn)

    def schema_version(self) -> int:
        with self.connect() as conn:
            return migrations.current_version(conn)

    def _reap(self, conn: Connection) -> None:
        """Fail running jobs whose process stopped sending heartbeats, and queued jobs whose
        process never started (they get QUEUED_GRACE more: a child imports NumPy first)."""
        conn.execute(
            "UPDATE jobs SET status = 'failed', finished_at = clock_timestamp(), error = %s "
            "WHERE (status = 'running' "
            "       AND heartbeat_at < clock_timestamp() - make_interval(secs => %s)) "
            "OR (status = 'queued' "
            "    AND heartbeat_at < clock_timestamp() - make_interval(secs => %s))",
            (INTERRUPTED, self.heartbeat_timeout, self.heartbeat_timeout + QUEUED_GRACE),
        )

    def reap(self) -> None:
        with self.connect() as conn:
            self._reap(conn)

    def create(self, spec: JobSpec) -> dict[str, Any]:
        """Insert a queued job, or raise JobConflictError if one is queued or running."""
        job_id = uuid.uuid4().hex
        with self.connect() as conn:
            for _ in range(3):
                try:
                    with conn.transaction():
                        self._reap(conn)
                        conn.execute(
                            "INSERT INTO jobs (job_id, status, created_at, heartbeat_at, "
                            "epochs, hyperparameters, dataset, activate, "
                            "min_validation_accuracy, accepted_by, note) "
                            "VALUES (%s, 'queued', clock_timestamp(), clock_timestamp(), "
                            "%s, %s::json, %s::json, %s, %s, %s, %s)",
                            (
                                job_id,
                                spec.hyperparameters["epochs"],
                                json.dumps(spec.hyperparameters),
                                json.dumps(spec.dataset),
                                spec.activate,
                                spec.min_validation_accuracy,
                                self.instance,
                                spec.note,
                            ),
                        )
                except pg_errors.UniqueViolation:
                    row = conn.execute(
                        "SELECT job_id FROM jobs WHERE status IN ('queued', 'running') LIMIT 1"
                    ).fetchone()
                    if row is not None:
                        raise JobConflictError(row[0]) from None
                    continue  # the job in the way ended meanwhile: try again
                return self._get(conn, job_id)
        raise JobsUnavailableError(
            "the jobs database: the training slot stayed contended; try again"
        )

    def get(self, job_id: str) -> dict[str, Any]:
        with self.connect() as conn:
            self._reap(conn)
            return self._get(conn, job_id)

    def _get(self, conn: Connection, job_id: str) -> dict[str, Any]:
        with conn.cursor(row_factory=dict_row) as cursor:
            row = cursor.execute("SELECT * FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no training job {job_id}")
        return job_view(row)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self.connect() as conn:
            self._reap(conn)
            with conn.cursor(row_factory=dict_row) as cursor:
                rows = cursor.execute(
                    "SELECT * FROM jobs ORDER BY created_at DESC LIMIT %s", (limit,)
                ).fetchall()
        return [job_view(row) for row in rows]

    def request_cancel(self, job_id: str) -> dict[str, Any]:
        with self.connect() as conn:
            with conn.transaction():
                self._reap(conn)
                status = self._locked_status(conn, job_id)
                if status in TERMINAL:
                    raise JobFinishedError(f"training job {job_id} has already {status}")
                conn.execute("UPDATE jobs SET cancel_requested = true WHERE job_id = %s", (job_id,))
            return self._get(conn, job_id)

    def delete(self, job_id: str) -> None:
        """Remove an ended job's record; an active job must be cancelled first."""
        with self.connect() as conn, conn.transaction():
            self._reap(conn)
            status = self._locked_status(conn, job_id)
            if status not in TERMINAL:
                raise JobActiveError(
                    f"training job {job_id} is still {status}; cancel it before deleting it"
                )
            conn.execute("DELETE FROM jobs WHERE job_id = %s", (job_id,))

    def _locked_status(self, conn: Connection, job_id: str) -> str:
        row = conn.execute(
            "SELECT status FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFoundError(f"no training job {job_id}")
        return str(row[0])

    # -- written by the training child and by the worker that watches it ------------------

    def start(self, job_id: str, pid: int) -> bool:
        """Mark the job running; False if it is no longer queued (cancelled or reaped)."""
        with self.connect() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET status = 'running', started_at = clock_timestamp(), "
                "heartbeat_at = clock_timestamp(), pid = %s, run_by = %s "
                "WHERE job_id = %s AND status = 'queued' AND NOT cancel_requested",
                (pid, f"{socket.gethostname()}:{pid}", job_id),
            )
            return cursor.rowcount == 1

    def heartbeat(self, job_id: str, progress: dict[str, Any] | None) -> tuple[bool, bool]:
        """Record liveness and progress; returns (still active, cancel requested)."""
        if progress is None:
            beat = sql.SQL("heartbeat_at = clock_timestamp()")
            params: tuple[Any, ...] = (job_id, job_id)
        else:
            beat = sql.SQL("heartbeat_at = clock_timestamp(), epoch = %s, progress = %s::json")
            params = (progress["epoch"], json.dumps(progress), job_id, job_id)
        # One statement: the update, then the row as it was (status and cancel_requested are
        # not what the update changes).
        query = sql.SQL(
            "WITH beat AS (UPDATE jobs SET {} WHERE job_id = %s AND status = 'running' "
            "RETURNING 1) SELECT status, cancel_requested FROM jobs WHERE job_id = %s"
        ).format(beat)
        with self.connect() as conn:
            row = conn.execute(query, params).fetchone()
        return row is not None and row[0] == "running", bool(row and row[1])

    def finish(self, job_id: str, status: str, **fields: Any) -> bool:
        """Move an active job to a terminal status; False if it had already ended."""
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status}")
        unknown = set(fields) - _FINISH_FIELDS
        if unknown:
            raise ValueError(f"not a job field finish() sets: {', '.join(sorted(unknown))}")
        assignments: list[sql.Composable] = [
            sql.SQL("status = %s"),
            sql.SQL("finished_at = clock_timestamp()"),
        ]
        values: list[Any] = [status]
        for key, value in fields.items():
            if key in _JSON_FIELDS:
                assignments.append(sql.SQL("{} = %s::json").format(sql.Identifier(key)))
                values.append(
                    value if isinstance(value, str) or value is None else json.dumps(value)
                )
            else:
                assignments.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
                values.append(bool(value) if key == "activated" else value)
        query = sql.SQL(
            "UPDATE jobs SET {} WHERE job_id = %s AND status IN ('queued', 'running')"
        ).format(sql.SQL(", ").join(assignments))
        with self.connect() as conn:
            cursor = conn.execute(query, (*values, job_id))
            return cursor.rowcount == 1


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def job_view(row: dict[str, Any]) -> dict[str, Any]:
    """A job row as the API shows it: the SQLite store's view (times are datetimes here, the
    JSON columns arrive parsed)."""
    return shared_view(row, when=iso, document=lambda value: value)
