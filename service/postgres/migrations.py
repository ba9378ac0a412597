"""The database schema, created and upgraded by numbered steps at start-up.

Each step is applied once, in order, and recorded in ``schema_migrations``. All pending steps
run in one transaction that first takes a transaction-level advisory lock, so N replicas
starting at once are safe: one applies the steps, the others wait for its commit and then find
nothing left to do. PostgreSQL's DDL is transactional, so a step that fails leaves no trace.

Steps are only ever appended. A replica running older code against a newer schema keeps
working as long as the steps are additive; it logs that the schema is ahead of it.

Tables (see each step for the columns):

- ``model_versions``: one row a version, the npz bytes and model.json exactly as the file
  store writes them, and the metadata without its history for cheap listings.
- ``model_current``: one row, the active version (a foreign key: it never dangles).
- ``model_activations``: every activation, in commit order.
- ``jobs``: training jobs; a partial unique index admits one queued or running job.
- ``routing``, ``routing_history``, ``version_counts``, ``paired_feedback``, ``drift_rows``:
  the rollout (service/rollout/store.py writes them).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from service.postgres.connection import Connection

log = logging.getLogger("iris.postgres")

# pg_advisory_xact_lock key for schema changes: "iris" in ASCII, then "schema" as a tag.
LOCK_KEY = 0x69726973_0005C4E3
CHANNEL = "iris_model_activated"
"""The LISTEN/NOTIFY channel; the payload is the version just made current, or "routing"
when the routing plan changed (service/rollout/plan.py's ROUTING_CHANGED)."""


class Step(NamedTuple):
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Step, ...] = (
    Step(
        1,
        "model versions, the current pointer and the activation history",
        r"""
        CREATE TABLE model_versions (
            version text PRIMARY KEY
                CHECK (version ~ '^[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}$'),
            metadata json NOT NULL,   -- model.json, byte for byte (json keeps the text)
            summary json NOT NULL,    -- the same without "history"
            weights bytea NOT NULL,   -- weights.npz; its sha256 is in metadata
            stored_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        -- npz of float64 does not compress: skip the attempt on every write and read
        ALTER TABLE model_versions ALTER COLUMN weights SET STORAGE EXTERNAL;
        CREATE TABLE model_current (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            version text NOT NULL REFERENCES model_versions (version),
            activated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE TABLE model_activations (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            version text NOT NULL REFERENCES model_versions (version),
            activated_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX model_activations_version ON model_activations (version, id);
        """,
    ),
    Step(
        2,
        "training jobs, one queued or running at a time",
        """
        CREATE TABLE jobs (
            job_id text PRIMARY KEY,
            status text NOT NULL
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
            created_at timestamptz NOT NULL,
            started_at timestamptz,
            finished_at timestamptz,
            heartbeat_at timestamptz NOT NULL,
            epoch integer NOT NULL DEFAULT 0,
            epochs integer NOT NULL,
            progress json,
            hyperparameters json NOT NULL,
            dataset json NOT NULL,
            activate boolean NOT NULL,
            min_validation_accuracy double precision,
            metrics json,
            model_version text,
            activated boolean NOT NULL DEFAULT false,
            error text,
            pid integer,
            cancel_requested boolean NOT NULL DEFAULT false,
            accepted_by text NOT NULL,  -- the replica that accepted the job
            run_by text                 -- host and pid of the training process
        );
        -- The rule "one job at a time" is this index: a second active row cannot exist.
        CREATE UNIQUE INDEX jobs_one_active ON jobs ((true))
            WHERE status IN ('queued', 'running');
        CREATE INDEX jobs_created ON jobs (created_at);
        """,
    ),
    Step(
        3,
        "a training job's note",
        """
        ALTER TABLE jobs ADD COLUMN note text;  -- POST /train's note, at most 200 characters
        """,
    ),
    Step(
        4,
        "the rollout: routing plan and history, counts per version, recent input rows",
        """
        CREATE TABLE routing (
            name text PRIMARY KEY CHECK (name = 'routing'),
            revision bigint NOT NULL,
            canary text,     -- JSON of the canary, or NULL
            shadow text,     -- JSON of the shadow, or NULL
            promoting text,  -- a promoted canary whose activation is pending, or NULL
            changed_at double precision NOT NULL
        );
        INSERT INTO routing (name, revision, changed_at) VALUES ('routing', 0, 0);
        CREATE TABLE routing_history (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            event text NOT NULL,
            reason text NOT NULL,
            routing text NOT NULL,
            figures text
        );
        CREATE TABLE version_counts (
            version text PRIMARY KEY,
            served bigint NOT NULL DEFAULT 0,
            feedback bigint NOT NULL DEFAULT 0,
            correct bigint NOT NULL DEFAULT 0,
            shadowed bigint NOT NULL DEFAULT 0,
            agreed bigint NOT NULL DEFAULT 0
        );
        CREATE TABLE paired_feedback (
            version text NOT NULL,
            stable text NOT NULL,
            count bigint NOT NULL DEFAULT 0,
            correct bigint NOT NULL DEFAULT 0,
            stable_correct bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (version, stable)
        );
        CREATE TABLE drift_rows (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            rows integer NOT NULL,
            data bytea NOT NULL,   -- rows x 4 little-endian float64
            at double precision NOT NULL
        );
        """,
    ),
)

LATEST = MIGRATIONS[-1].version

_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def apply(conn: Connection) -> int:
    """Apply every pending step under the advisory lock; returns the schema version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(_TABLE)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for step in MIGRATIONS:
            if step.version in applied:
                continue
            conn.execute(step.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                (step.version, step.description),
            )
            log.info("database schema: applied step %d (%s)", step.version, step.description)
        version = max(applied | {step.version for step in MIGRATIONS})
    if version > LATEST:
        log.warning(
            "database schema version %d is newer than this code's %d: running on it",
            version,
            LATEST,
        )
    return version


def current_version(conn: Connection) -> int:
    """The schema version recorded in the database (0 when no step was ever applied)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0
