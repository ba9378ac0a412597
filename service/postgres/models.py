"""The model store in PostgreSQL, with every promise of the file store (model.persistence).

A version is one row of ``model_versions``: the weights.npz bytes and the model.json text that
the file store would write, byte for byte, plus the metadata without its history for listings.
It is inserted in one transaction, so it is visible complete or not at all; with
``activate=True`` the pointer moves in that same transaction. Every load verifies the sha256
recorded in the metadata, then the arrays (names, dtypes, shapes, finiteness) with the file
store's own :func:`~model.persistence.parse_weights`, then ``hidden_units``: a damaged row
raises the same :class:`~model.errors.CorruptModelError` subclasses and is never served.

Activation verifies the version by loading it, moves ``model_current``, appends to
``model_activations`` and sends ``NOTIFY iris_model_activated, '<version>'``, all in one
transaction: the notification is delivered when, and only when, the pointer has moved.

Deletion removes the version's row and its activations in one statement that refuses when the
version is the current pointer. Activations and deletions take one transaction-level advisory
lock, so they never interleave; the foreign keys of ``model_current`` and
``model_activations`` refuse a deletion that an activation (of a replica running older code)
got in before, so the pointer never dangles.

A database that cannot be reached raises :class:`~model.errors.StoreUnavailableError` (the
service answers 503); a write the server refuses (a read-only or full database) raises
:class:`~model.errors.StoreWriteError`. Error messages name the operation, never the
database's address or user: an unavailable store's message may reach an anonymous client
(a 503, /readyz), so where and why go to the log (:mod:`service.postgres.connection`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from model.errors import (
    DanglingCurrentError,
    ModelInUseError,
    ModelNotFoundError,
    NoCurrentModelError,
    StoreUnavailableError,
    StoreWriteError,
)
from model.network import Model
from model.persistence import (
    StoredModel,
    check_version_id,
    new_version_id,
    parse_metadata,
    verified,
    version_metadata,
    weights_bytes,
)
from service.postgres.connection import (
    UNAVAILABLE,
    Connection,
    Database,
    DatabaseUnavailableError,
    first_line,
)
from service.postgres.migrations import CHANNEL

# pg_advisory_lock key held while one replica trains the default model of an empty store.
BOOTSTRAP_LOCK_KEY = 0x69726973_00B0075
# pg_advisory_xact_lock key held by every activation and deletion of a version.
VERSIONS_LOCK_KEY = 0x69726973_0000AC7
# One statement: the version's row and its activations go, unless it is the current pointer;
# then whether it was deleted and whether it is current.
DELETE_VERSION = """
WITH current AS (SELECT version FROM model_current),
gone AS (
    DELETE FROM model_versions
    WHERE version = %(version)s
      AND NOT EXISTS (SELECT 1 FROM current WHERE version = %(version)s)
    RETURNING version
),
activations AS (
    DELETE FROM model_activations WHERE version IN (SELECT version FROM gone)
)
SELECT EXISTS (SELECT 1 FROM gone), EXISTS (SELECT 1 FROM current WHERE version = %(version)s)
"""


class PostgresModelStore:
    """Versions of the model in PostgreSQL; the same methods and errors as ``ModelStore``."""

    def __init__(self, database: Database | str) -> None:
        self._owns_database = not isinstance(database, Database)
        self.db = database if isinstance(database, Database) else Database(database)

    def close(self) -> None:
        if self._owns_database:
            self.db.close()

    @contextlib.contextmanager
    def _connection(self, what: str, *, write: bool = False) -> Iterator[Connection]:
        """A connection whose failures become the store's errors, prefixed by ``what``."""
        try:
            with self.db.connection() as conn:
                yield conn
        except DatabaseUnavailableError:  # the connection logged where and why
            raise StoreUnavailableError(f"{what}: {UNAVAILABLE}") from None
        except pg_errors.UndefinedTable:
            raise StoreUnavailableError(
                f"{what}: the database has no model tables yet (its schema is not migrated)"
            ) from None
        except psycopg.Error as error:
            if write:  # an authenticated write: what the server refused (read-only, full)
                raise StoreWriteError(f"{what}: {first_line(error)}") from None
            self.db.refused(what, error)
            raise StoreUnavailableError(
                f"{what}: the database refused the query (the server log has the details)"
            ) from None

    # -- reading -------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Every stored version id, oldest first (ids sort by creation)."""
        with self._connection("cannot list the models") as conn:
            rows = conn.execute("SELECT version FROM model_versions ORDER BY version").fetchall()
        return [row[0] for row in rows]

    def current(self) -> str:
        """The active version id; raises NoCurrentModelError when none was ever activated."""
        with self._connection("cannot read the current version") as conn:
            row = conn.execute(
                "SELECT c.version, v.version IS NOT NULL FROM model_current c "
                "LEFT JOIN model_versions v USING (version)"
            ).fetchone()
        if row is None:
            raise NoCurrentModelError("no active model: the database has no current version")
        if not row[1]:  # the foreign key forbids it; kept for a hand-edited database
            raise DanglingCurrentError(
                f"the database names {row[0][:80]!r} as current, which is not a stored version"
            )
        return str(row[0])

    def metadata(self, version: str) -> dict[str, Any]:
        """The full model.json of ``version`` (with its training history)."""
        check_version_id(version)
        with self._connection(f"cannot read version {version}") as conn:
            row = conn.execute(
                "SELECT metadata::text FROM model_versions WHERE version = %s", (version,)
            ).fetchone()
        if row is None:
            raise ModelNotFoundError(f"no stored model version {version}")
        return check_metadata(version, row[0])

    def summary(self, version: str) -> dict[str, Any]:
        """The metadata without ``history``: what a listing shows, without parsing epochs."""
        check_version_id(version)
        with self._connection(f"cannot read version {version}") as conn:
            row = conn.execute(
                "SELECT summary::text FROM model_versions WHERE version = %s", (version,)
            ).fetchone()
        if row is None:
            raise ModelNotFoundError(f"no stored model version {version}")
        return check_metadata(version, row[0])

    def load(self, version: str) -> StoredModel:
        """Load and verify a version: checksum, array names, shapes, dtypes, finiteness."""
        check_version_id(version)
        with self._connection(f"cannot read version {version}") as conn:
            return self._load(conn, version)

    def load_current(self) -> StoredModel:
        return self.load(self.current())

    def _load(self, conn: Connection, version: str) -> StoredModel:
        row = conn.execute(
            "SELECT metadata::text, weights FROM model_versions WHERE version = %s", (version,)
        ).fetchone()
        if row is None:
            raise ModelNotFoundError(f"no stored model version {version}")
        return verify(version, row[0], bytes(row[1]))

    def activations(self) -> list[str]:
        """Versions that were ever current, oldest first, each once at its latest activation."""
        with self._connection("cannot read the activations") as conn:
            rows = conn.execute(
                "SELECT version FROM model_activations GROUP BY version ORDER BY max(id)"
            ).fetchall()
        return [row[0] for row in rows]

    # -- writing -------------------------------------------------------------------------

    def save(
        self, model: Model, info: Mapping[str, Any] | None = None, *, activate: bool = False
    ) -> str:
        """Store ``model`` as a new version (and make it current if asked); returns its id.

        ``info`` adds keys to model.json (hyperparameters, metrics, history, ...). The row,
        and with ``activate`` the pointer, become visible together when the transaction
        commits.
        """
        weights = weights_bytes(model)
        what = "cannot save the model"
        with self._connection(what, write=True) as conn:
            for _ in range(5):
                version = new_version_id()
                metadata = version_metadata(version, model, weights, info)
                with conn.transaction():
                    if not self._insert(conn, version, metadata_text(metadata), weights):
                        continue  # the id is taken (a clash of 32 random bits): draw again
                    if activate:
                        self._activate(conn, version)
                return version
        raise StoreWriteError("could not find a free version id after 5 tries")

    def activate(self, version: str) -> None:
        """Make ``version`` current after verifying it (roll forward or back), and notify."""
        check_version_id(version)
        what = f"cannot activate version {version}"
        with self._connection(what, write=True) as conn, conn.transaction():
            self._activate(conn, version)

    def delete(self, version: str) -> None:
        """Remove a stored version and its activations; the current one is refused
        (ModelInUseError), an unknown one is ModelNotFoundError."""
        check_version_id(version)
        what = f"cannot delete version {version}"
        with self._connection(what, write=True) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (VERSIONS_LOCK_KEY,))
            try:
                row = conn.execute(DELETE_VERSION, {"version": version}).fetchone()
            except pg_errors.ForeignKeyViolation:  # made current meanwhile, without the lock
                raise in_use(version) from None  # the transaction rolls back
        deleted, current = row if row is not None else (False, False)
        if current:
            raise in_use(version)
        if not deleted:
            raise ModelNotFoundError(f"no stored model version {version}")

    def clean(self) -> list[str]:
        """Nothing is ever left half-written in a database: a failed transaction leaves no row."""
        return []

    @contextlib.contextmanager
    def bootstrap_lock(self) -> Iterator[None]:
        """Held by one replica at a time while it trains the default model of an empty store.

        A session-level advisory lock on a pooled connection: a replica that dies while
        holding it releases it with its connection.
        """
        what = "cannot take the bootstrap lock"
        with self._connection(what) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (BOOTSTRAP_LOCK_KEY,))
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (BOOTSTRAP_LOCK_KEY,))

    # -- shared with the data-directory migration ---------------------------------------

    def insert_verified(self, version: str, metadata: str, weights: bytes) -> bool:
        """Store a version exactly as given after verifying it; False if the id is taken."""
        check_version_id(version)
        verify(version, metadata, weights)
        what = f"cannot copy version {version} into the database"
        with self._connection(what, write=True) as conn, conn.transaction():
            return self._insert(conn, version, metadata, weights)

    def activate_if_none(self, version: str) -> str | None:
        """Make ``version`` current unless a version already is; returns the current before."""
        check_version_id(version)
        what = f"cannot activate version {version}"
        with self._connection(what, write=True) as conn, conn.transaction():
            # The pointer row is locked by whoever activates: take the same lock to decide.
            conn.execute("LOCK TABLE model_current IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute("SELECT version FROM model_current").fetchone()
            if row is not None:
                return str(row[0])
            self._activate(conn, version)
            return None

    def _insert(self, conn: Connection, version: str, metadata: str, weights: bytes) -> bool:
        summary = {k: v for k, v in json.loads(metadata).items() if k != "history"}
        cursor = conn.execute(
            "INSERT INTO model_versions (version, metadata, summary, weights) "
            "VALUES (%s, %s::json, %s::json, %s) ON CONFLICT (version) DO NOTHING",
            (version, metadata, json.dumps(summary, allow_nan=False), weights),
        )
        return cursor.rowcount == 1

    def _activate(self, conn: Connection, version: str) -> None:
        """Verify, move the pointer, record the activation and notify (inside a transaction)."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (VERSIONS_LOCK_KEY,))
        self._load(conn, version)
        conn.execute(
            "INSERT INTO model_current (singleton, version) VALUES (true, %s) "
            "ON CONFLICT (singleton) DO UPDATE "
            "SET version = excluded.version, activated_at = clock_timestamp()",
            (version,),
        )
        conn.execute("INSERT INTO model_activations (version) VALUES (%s)", (version,))
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, version))


def in_use(version: str) -> ModelInUseError:
    return ModelInUseError(
        f"version {version} is the current version (the one served): activate another version first"
    )


def metadata_text(metadata: Mapping[str, Any]) -> str:
    """model.json as the file store writes it."""
    return json.dumps(metadata, indent=2, allow_nan=False)


def check_metadata(version: str, text: str) -> dict[str, Any]:
    """Parse model.json and check what the file store checks (same messages)."""
    return parse_metadata(version, text)


def verify(version: str, metadata_json: str, weights: bytes) -> StoredModel:
    """The file store's load checks, on a row: checksum, arrays, hidden_units agreement."""
    return verified(version, check_metadata(version, metadata_json), weights, "row")
