"""The PostgreSQL backend: model versions, the current pointer and training jobs in a database.

Chosen by ``IRIS_DATABASE_URL``; without it the service keeps its data directory (files and
SQLite). The stores here have the methods and errors of the embedded ones, so routes, the
registry and the training child use either without knowing which:

- :class:`~service.postgres.models.PostgresModelStore` — like ``model.persistence.ModelStore``
- :class:`~service.postgres.jobs.PostgresJobStore` — like ``service.job_store.JobStore``
- :class:`~service.postgres.notify.Listener` — calls back when any replica activates a version
- :mod:`~service.postgres.migrations` — the schema, upgraded at start-up under an advisory lock
- :mod:`~service.postgres.migrate` — copies a data directory into the database

Driver: psycopg 3 and its pool. The schema is four small tables, written in SQL in one place
(migrations.py); an ORM would add a dependency and a layer without removing any of that SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.postgres.connection import Database, DatabaseUnavailableError
from service.postgres.jobs import PostgresJobStore
from service.postgres.models import PostgresModelStore
from service.postgres.notify import Listener


@dataclass(frozen=True)
class Stores:
    """Both stores over one pool; ``close()`` closes the pool."""

    database: Database
    models: PostgresModelStore
    jobs: PostgresJobStore

    def close(self) -> None:
        self.database.close()


def open_stores(
    url: str,
    *,
    heartbeat_timeout: float = 5.0,
    max_connections: int = 4,
    instance: str | None = None,
    name: str = "iris",
) -> Stores:
    """Both stores on one small pool (one connection kept open, ``max_connections`` at most).

    Opening never blocks: with the database down, the first call of a store raises its
    "unavailable" error after a few seconds, and later calls find the database once it is back.
    The training child uses ``open_stores(url, max_connections=2)``.
    """
    database = Database(url, min_size=1, max_size=max_connections, name=name)
    return Stores(
        database=database,
        models=PostgresModelStore(database),
        jobs=PostgresJobStore(database, heartbeat_timeout=heartbeat_timeout, instance=instance),
    )


__all__ = [
    "Database",
    "DatabaseUnavailableError",
    "Listener",
    "PostgresJobStore",
    "PostgresModelStore",
    "Stores",
    "open_stores",
]
