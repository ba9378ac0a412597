"""The model store and the job store, each behind one interface, and the two backends.

- **files** (the default): versions under ``DATA_DIR/models`` (``model.persistence``) and jobs
  in ``DATA_DIR/jobs.sqlite3`` (``service.job_store``): one machine, nothing to set up.
- **postgresql** (``IRIS_DATABASE_URL``): versions, the current pointer and jobs in PostgreSQL
  (``service.postgres``): N stateless replicas; an activation reaches every replica through
  LISTEN/NOTIFY, with the periodic check as the fallback.

Routes, the registry and the training child use :class:`ModelStoreLike` and
:class:`JobStoreLike` and never ask which backend runs. The training child opens the same
backend from :attr:`Backend.child_args` (and, for PostgreSQL, ``IRIS_DATABASE_URL`` in its
environment, never on its command line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from model.network import Model
from model.persistence import ModelStore, StoredModel
from service.job_store import JobSpec, JobStore
from service.rollout.store import RolloutStore, SqliteConnector

log = logging.getLogger("iris.stores")
DATABASE_URL = "IRIS_DATABASE_URL"


class ModelStoreLike(Protocol):
    """Versions of the model: verified on every load, visible only once complete."""

    def versions(self) -> list[str]: ...
    def current(self) -> str: ...
    def metadata(self, version: str) -> dict[str, Any]: ...
    def summary(self, version: str) -> dict[str, Any]: ...
    def load(self, version: str) -> StoredModel: ...
    def save(
        self, model: Model, info: Mapping[str, Any] | None = None, *, activate: bool = False
    ) -> str: ...
    def activate(self, version: str) -> None: ...
    def delete(self, version: str) -> None: ...
    def activations(self) -> list[str]: ...
    def clean(self) -> list[str]: ...


class JobStoreLike(Protocol):
    """Training jobs: one queued or running at a time, heartbeats from the training child."""

    heartbeat_timeout: float

    def initialize(self) -> Any: ...
    def reap(self) -> None: ...
    def create(self, spec: JobSpec) -> dict[str, Any]: ...
    def get(self, job_id: str) -> dict[str, Any]: ...
    def recent(self, limit: int) -> list[dict[str, Any]]: ...
    def request_cancel(self, job_id: str) -> dict[str, Any]: ...
    def delete(self, job_id: str) -> None: ...
    def start(self, job_id: str, pid: int) -> bool: ...
    def heartbeat(self, job_id: str, progress: dict[str, Any] | None) -> tuple[bool, bool]: ...
    def finish(self, job_id: str, status: str, **fields: Any) -> bool: ...


@dataclass
class Backend:
    """Both stores of one backend, and what a training child needs to open them again."""

    name: str  # "files" or "postgresql"
    models: ModelStoreLike
    jobs: JobStoreLike
    child_args: list[str]
    rollout: RolloutStore | None = None  # the routing and monitoring state (servers only)
    child_env: dict[str, str] = field(default_factory=dict)
    where: str = ""  # for the log: the data directory, or host:port/database
    schema_version: int | None = None
    close: Callable[[], None] = lambda: None

    @property
    def shared(self) -> bool:
        """True when other machines share the state (replicas follow it by notification)."""
        return self.name == "postgresql"

    def bootstrap(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive among every process that could train the default model at once."""
        lock = getattr(self.models, "bootstrap_lock", None)
        return lock() if lock is not None else contextlib.nullcontext()

    def listen(self, callback: Callable[[str | None], object]) -> Callable[[], None] | None:
        """Call ``callback`` when any replica activates a version (with the version) or
        changes the routing (with "routing"); returns how to stop."""
        if not self.shared:
            return None
        from service.postgres import Listener

        def notified(version: str | None) -> None:
            callback(version)

        listener = Listener(self.child_env[DATABASE_URL], notified)
        listener.start()
        return listener.stop


def open_backend(data_dir: Path, database_url: str | None, heartbeat_timeout: float) -> Backend:
    """The backend the settings choose: PostgreSQL when a URL is given, else the data
    directory. Opening never waits for a database: with it down, calls fail until it is back."""
    if database_url:
        from service.postgres import open_stores
        from service.postgres.rollout import PostgresConnector

        stores = open_stores(
            database_url, heartbeat_timeout=heartbeat_timeout, instance=instance_name()
        )
        return Backend(
            "postgresql",
            stores.models,
            stores.jobs,
            child_args=["postgresql"],
            rollout=RolloutStore(PostgresConnector(stores.database)),
            child_env={DATABASE_URL: database_url},
            where=stores.database.where,
            close=stores.close,
        )
    models_dir, jobs_db = data_dir / "models", data_dir / "jobs.sqlite3"
    return Backend(
        "files",
        ModelStore(models_dir),
        JobStore(jobs_db, heartbeat_timeout),
        child_args=["files", str(jobs_db), str(models_dir)],
        rollout=RolloutStore(SqliteConnector(data_dir / "monitoring.sqlite3")),
        where=str(data_dir),
    )


@contextlib.contextmanager
def child_backend(
    args: list[str], heartbeat_timeout: float, **jobs_options: Any
) -> Iterator[Backend]:
    """The backend a training child opens from :attr:`Backend.child_args`."""
    if args[0] == "postgresql":
        from service.postgres import open_stores

        stores = open_stores(
            os.environ[DATABASE_URL],
            heartbeat_timeout=heartbeat_timeout,
            max_connections=2,
            instance=instance_name(),
        )
        try:
            yield Backend("postgresql", stores.models, stores.jobs, args)
        finally:
            stores.close()
        return
    jobs_db, models_dir = Path(args[1]), Path(args[2])
    jobs = JobStore(jobs_db, heartbeat_timeout=heartbeat_timeout, **jobs_options)
    yield Backend("files", ModelStore(models_dir), jobs, args)


def instance_name() -> str:
    """This replica's name in job records (the pod's name on Kubernetes)."""
    return f"{socket.gethostname()}:{os.getpid()}"
