"""Where the rollout's state lives, for every worker and replica: the routing plan and its
history, the counts per version, and the window of recent input rows for drift.

One class, :class:`RolloutStore`, writes one set of SQL statements to either backend through
a small connector: SQLite (``DATA_DIR/monitoring.sqlite3``, WAL) beside the data directory's
models, or PostgreSQL (the tables of migration step 4) beside its shared ones. Both speak
``INSERT ... ON CONFLICT DO UPDATE`` and window functions, so only the DDL differs.

Counts are added, never overwritten (``served = served + excluded.served``), so any number of
workers flush into the same rows; a plan change is conditional on the revision it was decided
from, so a decision is taken once however many replicas reach it at the same moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from model.errors import StoreUnavailableError, StoreWriteError
from model.network import FloatArray
from service.job_store import iso
from service.rollout.plan import Canary, Plan, Shadow, decode, encode

FEATURE_COUNT = 4
HISTORY_LIMIT = 1000


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...
    def fetchone(self) -> Any: ...


class Executor(Protocol):
    def __call__(self, sql: str, params: tuple[Any, ...] = ()) -> Cursor: ...


class Counts(NamedTuple):
    """What one version has been counted for, all workers and replicas together."""

    served: int = 0
    feedback: int = 0
    correct: int = 0
    shadowed: int = 0
    agreed: int = 0


class Paired(NamedTuple):
    """Feedback labels given for a version other than stable, and how many of them that
    version and stable (computed on the same rows) got right."""

    labels: int = 0
    correct: int = 0
    stable_correct: int = 0


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS routing (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    canary TEXT,
    shadow TEXT,
    promoting TEXT,
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS routing_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    reason TEXT NOT NULL,
    routing TEXT NOT NULL,
    figures TEXT
);
CREATE TABLE IF NOT EXISTS version_counts (
    version TEXT PRIMARY KEY,
    served INTEGER NOT NULL DEFAULT 0,
    feedback INTEGER NOT NULL DEFAULT 0,
    correct INTEGER NOT NULL DEFAULT 0,
    shadowed INTEGER NOT NULL DEFAULT 0,
    agreed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS paired_feedback (
    version TEXT NOT NULL,
    stable TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    correct INTEGER NOT NULL DEFAULT 0,
    stable_correct INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (version, stable)
);
CREATE TABLE IF NOT EXISTS drift_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rows INTEGER NOT NULL,
    data BLOB NOT NULL,
    at REAL NOT NULL
);
INSERT INTO routing (name, revision, canary, shadow, changed_at)
    VALUES ('routing', 0, NULL, NULL, 0) ON CONFLICT (name) DO NOTHING;
"""

ADD_COUNTS = """
INSERT INTO version_counts (version, served, feedback, correct, shadowed, agreed)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (version) DO UPDATE SET
    served = version_counts.served + excluded.served,
    feedback = version_counts.feedback + excluded.feedback,
    correct = version_counts.correct + excluded.correct,
    shadowed = version_counts.shadowed + excluded.shadowed,
    agreed = version_counts.agreed + excluded.agreed
"""
ADD_PAIRED = """
INSERT INTO paired_feedback (version, stable, count, correct, stable_correct)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (version, stable) DO UPDATE SET
    count = paired_feedback.count + excluded.count,
    correct = paired_feedback.correct + excluded.correct,
    stable_correct = paired_feedback.stable_correct + excluded.stable_correct
"""
# Keep the newest batches of rows that hold the window, and drop the older ones.
TRIM_ROWS = """
DELETE FROM drift_rows WHERE id < (
    SELECT coalesce(max(id), 0) FROM (
        SELECT id, sum(rows) OVER (ORDER BY id DESC) AS newer FROM drift_rows
    ) AS batches WHERE newer >= %s
)
"""
CHANGE_PLAN = """
UPDATE routing
SET revision = revision + 1, canary = %s, shadow = %s, promoting = %s, changed_at = %s
WHERE name = 'routing' AND revision = %s
"""


class Connector(Protocol):
    """One backend's way to run statements in a transaction."""

    def transaction(
        self, what: str, *, write: bool = True
    ) -> contextlib.AbstractContextManager[Executor]: ...
    def initialize(self) -> None: ...
    def notify(self, run: Executor) -> None: ...


class RolloutStore:
    """The rollout's shared state; every method is one short transaction."""

    def __init__(self, connector: Connector) -> None:
        self.sql = connector

    def initialize(self) -> None:
        self.sql.initialize()

    # -- the plan and its history -----------------------------------------------------------

    def plan(self) -> Plan:
        with self.sql.transaction("read the routing", write=False) as run:
            return self._plan(run)

    @staticmethod
    def _plan(run: Executor) -> Plan:
        row = run("SELECT canary, shadow, revision, promoting FROM routing WHERE name = 'routing'")
        found = row.fetchone()
        return decode(*found) if found else Plan()

    def change_plan(
        self,
        canary: Canary | None,
        shadow: Shadow | None,
        *,
        revision: int,
        stable: str,
        event: str,
        reason: str,
        figures: Mapping[str, Any] | None = None,
        new_trial: bool = False,
        promoting: str | None = None,
    ) -> Plan | None:
        """Set the plan if it is still at ``revision``, and record why (with ``stable``, the
        active version then); None when another change came first (nothing is written then).
        ``new_trial``: the canary's feedback against stable starts again from nothing (it
        was not the canary before). ``promoting``: a promoted canary to activate."""
        now = time.time()
        with self.sql.transaction("change the routing") as run:
            changed = run(CHANGE_PLAN, (encode(canary), encode(shadow), promoting, now, revision))
            if changed.rowcount != 1:
                return None
            plan = Plan(canary, shadow, revision + 1, promoting)
            if new_trial and canary is not None:
                run("DELETE FROM paired_feedback WHERE version = %s", (canary.version,))
            self._history(
                run, at=now, event=event, reason=reason, routing=plan.view(stable),
                figures=figures,
            )  # fmt: skip
            self.sql.notify(run)
        return plan

    def promoted(self, version: str) -> bool:
        """The activation of a promoted canary is done (or can never be): it is pending no
        more. False when it was not pending (another replica finished it)."""
        with self.sql.transaction("finish a promotion") as run:
            done = run(
                "UPDATE routing SET promoting = NULL, revision = revision + 1 "
                "WHERE name = 'routing' AND promoting = %s",
                (version,),
            )
            if done.rowcount == 1:
                self.sql.notify(run)  # every worker's plan shows it pending no more
            return done.rowcount == 1

    def record(
        self, event: str, reason: str, stable: str, figures: Mapping[str, Any] | None = None
    ) -> None:
        """A history entry that changes no plan (an activation, a failed promotion)."""
        with self.sql.transaction("record a routing event") as run:
            self._history(
                run, at=time.time(), event=event, reason=reason,
                routing=self._plan(run).view(stable), figures=figures,
            )  # fmt: skip

    @staticmethod
    def _history(
        run: Executor,
        *,
        at: float,
        event: str,
        reason: str,
        routing: Mapping[str, Any],
        figures: Mapping[str, Any] | None,
    ) -> None:
        run(
            "INSERT INTO routing_history (at, event, reason, routing, figures) "
            "VALUES (%s, %s, %s, %s, %s)",
            (at, event, reason, json.dumps(routing),
             json.dumps(figures) if figures is not None else None),
        )  # fmt: skip

    def history(self, limit: int = HISTORY_LIMIT) -> list[dict[str, Any]]:
        """The newest ``limit`` entries, oldest first."""
        with self.sql.transaction("read the routing history", write=False) as run:
            rows = run(
                "SELECT id, at, event, reason, routing, figures FROM routing_history "
                "ORDER BY id DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            {
                "id": int(row[0]),
                "at": iso(row[1]),
                "event": row[2],
                "reason": row[3],
                "routing": json.loads(row[4]),
                "figures": json.loads(row[5]) if row[5] else None,
            }
            for row in reversed(rows)
        ]

    # -- counts -----------------------------------------------------------------------------

    def flush(
        self,
        served: Mapping[str, int],
        shadowed: Mapping[str, tuple[int, int]],
        rows: FloatArray | None,
        window: int,
    ) -> None:
        """Add one worker's counts and recent rows, in one transaction."""
        with self.sql.transaction("record the monitoring counts") as run:
            for version in sorted(served.keys() | shadowed.keys()):  # one lock order
                n, agreed = shadowed.get(version, (0, 0))
                run(ADD_COUNTS, (version, served.get(version, 0), 0, 0, n, agreed))
            if rows is not None and len(rows):
                data = np.ascontiguousarray(rows[-window:], dtype="<f8").tobytes()
                run(
                    "INSERT INTO drift_rows (rows, data, at) VALUES (%s, %s, %s)",
                    (len(data) // (8 * FEATURE_COUNT), data, time.time()),
                )
                run(TRIM_ROWS, (window,))

    def add_feedback(
        self, version: str, count: int, correct: int, paired: tuple[str, int] | None
    ) -> None:
        """Feedback labels for ``version``; ``paired`` is (stable, how many of the same rows
        stable got right) when ``version`` is not stable."""
        with self.sql.transaction("record feedback") as run:
            run(ADD_COUNTS, (version, 0, count, correct, 0, 0))
            if paired is not None:
                stable, stable_correct = paired
                run(ADD_PAIRED, (version, stable, count, correct, stable_correct))

    def counts(self) -> dict[str, Counts]:
        with self.sql.transaction("read the monitoring counts", write=False) as run:
            rows = run(
                "SELECT version, served, feedback, correct, shadowed, agreed "
                "FROM version_counts ORDER BY version"
            ).fetchall()
        return {row[0]: Counts(*(int(v) for v in row[1:])) for row in rows}

    def paired(self, version: str, stable: str) -> Paired:
        with self.sql.transaction("read the feedback of a canary", write=False) as run:
            row = run(
                "SELECT count, correct, stable_correct FROM paired_feedback "
                "WHERE version = %s AND stable = %s",
                (version, stable),
            ).fetchone()
        return Paired(*(int(v) for v in row)) if row else Paired()

    def window(self, size: int) -> FloatArray:
        """The newest ``size`` input rows (fewer while fewer came), oldest first."""
        with self.sql.transaction("read the recent inputs", write=False) as run:
            batches = run("SELECT rows, data FROM drift_rows ORDER BY id DESC").fetchall()
        parts: list[FloatArray] = []
        held = 0
        for _, data in batches:
            part = np.frombuffer(bytes(data), dtype="<f8").reshape(-1, FEATURE_COUNT)
            parts.append(part[-(size - held) :])
            held += len(parts[-1])
            if held >= size:
                break
        if not parts:
            return np.empty((0, FEATURE_COUNT))
        return np.concatenate(parts[::-1]).astype(np.float64)


# -- SQLite ---------------------------------------------------------------------------------


class SqliteConnector:
    """``DATA_DIR/monitoring.sqlite3`` in WAL mode: one short connection per transaction."""

    def __init__(self, path: Path, busy_seconds: float = 5.0) -> None:
        self.path = path
        self.busy_seconds = busy_seconds
        self._statements: dict[str, str] = {}

    def initialize(self) -> None:
        with contextlib.suppress(OSError):  # private from birth, as the jobs database
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._connect("open the monitoring database") as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SQLITE_SCHEMA)

    @contextlib.contextmanager
    def _connect(self, what: str) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=self.busy_seconds, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreUnavailableError(f"{what}: {error}") from None
        try:
            yield db
        except sqlite3.OperationalError as error:
            if "readonly" in str(error) or "full" in str(error):
                raise StoreWriteError(f"{what}: {error}") from None
            raise StoreUnavailableError(f"{what}: {error}") from None
        except sqlite3.DatabaseError as error:
            raise StoreUnavailableError(f"{what}: {error}") from None
        finally:
            db.close()

    @contextlib.contextmanager
    def transaction(self, what: str, *, write: bool = True) -> Iterator[Executor]:
        """A write takes the lock at once (``BEGIN IMMEDIATE``); a read is a deferred
        transaction, which in WAL mode no writer blocks."""
        with self._connect(what) as db:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")

            def run(sql: str, params: tuple[Any, ...] = ()) -> Cursor:
                statement = self._statements.get(sql)
                if statement is None:
                    statement = self._statements[sql] = sql.replace("%s", "?")
                return db.execute(statement, params)

            try:
                yield run
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def notify(self, run: Executor) -> None:
        """Workers of one machine read the plan at their next flush: nothing to send."""
