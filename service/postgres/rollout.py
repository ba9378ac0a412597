"""The rollout's state in PostgreSQL: the connector of service/rollout/store.py.

The tables are migration step 4's. A plan change sends ``NOTIFY iris_model_activated,
'routing'`` in its own transaction, so every replica's listener reloads the plan when, and
only when, the change has committed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

from model.errors import StoreUnavailableError, StoreWriteError
from service.postgres.connection import UNAVAILABLE, Database, DatabaseUnavailableError
from service.postgres.migrations import CHANNEL
from service.rollout.plan import ROUTING_CHANGED
from service.rollout.store import Cursor, Executor


class PostgresConnector:
    def __init__(self, database: Database) -> None:
        self.db = database

    def initialize(self) -> None:
        """The tables come with the schema's migrations (applied at start-up)."""

    @contextlib.contextmanager
    def transaction(self, what: str, *, write: bool = True) -> Iterator[Executor]:
        try:
            with self.db.connection() as conn, conn.transaction():

                def run(sql: str, params: tuple[Any, ...] = ()) -> Cursor:
                    return conn.execute(sql, params)

                yield run
        except DatabaseUnavailableError:
            raise StoreUnavailableError(f"{what}: {UNAVAILABLE}") from None
        except psycopg.errors.ReadOnlySqlTransaction as error:
            raise StoreWriteError(f"{what}: {error}") from None
        except psycopg.Error as error:
            self.db.refused(what, error)
            raise StoreUnavailableError(
                f"{what}: the database refused the query (the server log has the details)"
            ) from None

    def notify(self, run: Executor) -> None:
        run("SELECT pg_notify(%s, %s)", (CHANNEL, ROUTING_CHANGED))
