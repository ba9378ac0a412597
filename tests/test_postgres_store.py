"""The PostgreSQL backend against a real server (harness/postgres.py): the model store, the job
store, migrations, activation notifications, outages and the data-directory migration."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from harness.models import random_model
from harness.postgres import PgCluster
from harness.servers import free_port, wait_for
from model.errors import (
    ChecksumMismatchError,
    CorruptModelError,
    InvalidVersionError,
    ModelInUseError,
    ModelNotFoundError,
    NoCurrentModelError,
    NonFiniteWeightsError,
    ShapeError,
    StoreUnavailableError,
    StoreWriteError,
    UnreadableModelError,
)
from model.network import Model
from model.persistence import ModelStore, new_version_id, weights_bytes
from service.job_store import (
    JobActiveError,
    JobConflictError,
    JobError,
    JobNotFoundError,
    JobSpec,
    JobStore,
    JobsUnavailableError,
)
from service.postgres import Listener, Stores, migrations, open_stores
from service.postgres.jobs import INTERRUPTED, PostgresJobStore
from service.postgres.migrate import migrate_data_dir
from service.postgres.models import PostgresModelStore

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = JobSpec(
    hyperparameters={"epochs": 200, "hidden_units": 4, "learning_rate": 0.1},
    dataset={"source": "iris", "rows": 150},
    activate=True,
    min_validation_accuracy=0.9,
)
OTHER_SPEC = JobSpec(
    hyperparameters={"epochs": 50, "hidden_units": 8},
    dataset={"source": "request", "rows": 30},
    activate=False,
)


# -- fixtures and shared steps -----------------------------------------------------------------


@pytest.fixture
def empty_url(postgres: PgCluster) -> Iterator[str]:
    """A new database without any table."""
    with postgres.fresh_database() as url:
        yield url


@pytest.fixture
def pg_url(empty_url: str) -> str:
    """A new database with the schema."""
    with psycopg.connect(empty_url, autocommit=True) as conn:
        migrations.apply(conn)
    return empty_url


@pytest.fixture
def stores(pg_url: str) -> Iterator[Stores]:
    opened = open_stores(pg_url)
    try:
        yield opened
    finally:
        opened.close()


def execute(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement as the superuser (to damage rows, age heartbeats, inspect)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query.encode(), params)
        return cursor.fetchall() if cursor.description else []


def model_arrays(model: Model) -> dict[str, np.ndarray]:
    return model.params.arrays() | {"mean": model.standardizer.mean, "std": model.standardizer.std}


def assert_same_model(actual: Model, expected: Model) -> None:
    a, e = model_arrays(actual), model_arrays(expected)
    for name in e:
        assert a[name].dtype == np.float64, name
        assert a[name].tobytes() == e[name].tobytes(), name  # bit-exact, -0.0 included


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def replace_weights(url: str, version: str, data: bytes) -> None:
    """Store other weights and record their checksum, as a careless hand edit would."""
    execute(
        url,
        "UPDATE model_versions SET weights = %s, metadata = jsonb_set(metadata::jsonb, "
        "'{weights_sha256}', to_jsonb(%s::text))::json WHERE version = %s",
        (data, hashlib.sha256(data).hexdigest(), version),
    )


# -- the model store ------------------------------------------------------------------------


def test_load_after_save_returns_identical_params_and_the_file_stores_metadata(
    stores: Stores, pg_url: str, tmp_path: Path
) -> None:
    model = random_model(hidden=5, seed=7)
    model.params.b2[0] = -0.0
    info = {"hyperparameters": {"epochs": 3}, "metrics": {"accuracy": 0.5}, "history": [1, 2]}
    version = stores.models.save(model, info)

    loaded = stores.models.load(version)
    assert_same_model(loaded.model, model)
    [(weights,)] = execute(pg_url, "SELECT weights FROM model_versions")
    assert bytes(weights) == weights_bytes(model)

    files = ModelStore(tmp_path / "models")
    expected = files.metadata(files.save(model, info))
    for metadata in (loaded.metadata, stores.models.metadata(version)):
        assert metadata["version"] == version
        assert metadata["weights_sha256"] == hashlib.sha256(weights_bytes(model)).hexdigest()
        assert metadata.keys() == expected.keys()
        ignore = ("version", "created_at")
        assert {k: v for k, v in metadata.items() if k not in ignore} == {
            k: v for k, v in expected.items() if k not in ignore
        }
    summary = stores.models.summary(version)
    assert "history" not in summary
    assert summary == {k: v for k, v in loaded.metadata.items() if k != "history"}
    assert stores.models.clean() == []


def test_versions_current_and_activations_follow_the_file_store(stores: Stores) -> None:
    models = stores.models
    assert models.versions() == []
    assert models.activations() == []
    with pytest.raises(NoCurrentModelError, match="no active model"):
        models.current()

    a = models.save(random_model(seed=1), activate=True)
    b = models.save(random_model(seed=2))
    c = models.save(random_model(seed=3))
    assert models.versions() == [a, b, c]
    assert models.current() == a
    models.activate(b)
    models.activate(a)
    assert models.current() == a
    assert models.activations() == [b, a]  # each once, at its latest activation
    assert models.load_current().version == a


def test_unknown_and_malformed_versions_are_refused(stores: Stores) -> None:
    unknown = new_version_id()
    for call in (stores.models.load, stores.models.metadata, stores.models.activate):
        with pytest.raises(ModelNotFoundError, match=f"no stored model version {unknown}"):
            call(unknown)
        with pytest.raises(InvalidVersionError, match="is not a version id"):
            call("../../etc/passwd")


def test_delete_removes_the_row_and_its_activations_and_refuses_the_current_one(
    stores: Stores, pg_url: str
) -> None:
    models = stores.models
    a = models.save(random_model(seed=1), activate=True)
    b = models.save(random_model(seed=2), activate=True)
    c = models.save(random_model(seed=3))
    with pytest.raises(ModelInUseError, match=f"version {b} is the current version"):
        models.delete(b)
    models.delete(a)  # active once, not now: its activation goes with it
    models.delete(c)  # never active
    assert models.versions() == [b]
    assert models.activations() == [b]
    assert execute(pg_url, "SELECT version FROM model_versions") == [(b,)]
    assert execute(pg_url, "SELECT DISTINCT version FROM model_activations") == [(b,)]
    for gone in (a, c):
        for call in (models.load, models.summary, models.delete, models.activate):
            with pytest.raises(ModelNotFoundError, match=f"no stored model version {gone}"):
                call(gone)
    with pytest.raises(InvalidVersionError):
        models.delete("../../etc/passwd")
    assert models.current() == b


def race(
    calls: list[tuple[Callable[[str], None], type[Exception]]], version: str
) -> list[Exception]:
    """Run each call on ``version`` at once, one thread each; the refusals they raised."""
    start = threading.Barrier(len(calls))
    refused: list[Exception] = []

    def attempt(call: Callable[[str], None], refusal: type[Exception]) -> None:
        start.wait()
        try:
            call(version)
        except refusal as error:
            refused.append(error)

    threads = [threading.Thread(target=attempt, args=pair) for pair in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return refused


def test_an_activation_racing_a_deletion_never_leaves_the_pointer_dangling(pg_url: str) -> None:
    activating, deleting = PostgresModelStore(pg_url), PostgresModelStore(pg_url)
    try:
        keep = activating.save(random_model(seed=1), activate=True)
        for _ in range(20):
            version = activating.save(random_model(seed=2))
            refused = race(
                [(activating.activate, ModelNotFoundError), (deleting.delete, ModelInUseError)],
                version,
            )
            assert len(refused) == 1, refused  # one went through, the other was refused
            if isinstance(refused[0], ModelNotFoundError):  # deleted first
                assert deleting.current() == keep
                assert version not in deleting.versions()
            else:  # activated first
                assert deleting.current() == version
                activating.activate(keep)
    finally:
        activating.close()
        deleting.close()


def test_a_deletion_behind_an_activation_that_took_no_lock_is_refused(
    stores: Stores, pg_url: str
) -> None:
    keep = stores.models.save(random_model(seed=1), activate=True)
    version = stores.models.save(random_model(seed=2))
    # A replica running older code activates without the advisory lock; its transaction is
    # open when the deletion starts, which then waits on the row its pointer references.
    older = psycopg.connect(pg_url)
    refused: list[Exception] = []

    def delete() -> None:
        try:
            stores.models.delete(version)
        except ModelInUseError as error:
            refused.append(error)

    try:
        older.execute("UPDATE model_current SET version = %s", (version,))
        deleting = threading.Thread(target=delete)
        deleting.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        wait_for(lambda: execute(pg_url, waiting)[0][0] == 1, 10, "the deletion waiting", 0.02)
        older.commit()
    finally:
        older.close()
    deleting.join(10)
    assert len(refused) == 1
    assert stores.models.current() == version
    assert stores.models.versions() == [keep, version]


def _flip_a_byte(url: str, version: str) -> None:
    execute(
        url,
        "UPDATE model_versions SET weights = set_byte(weights, 200, "
        "(get_byte(weights, 200) + 1) %% 256) WHERE version = %s",
        (version,),
    )


def _truncate(url: str, version: str) -> None:
    [(weights,)] = execute(url, "SELECT weights FROM model_versions WHERE version = %s", (version,))
    replace_weights(url, version, bytes(weights)[:60])


def _nan(url: str, version: str) -> None:
    arrays = model_arrays(random_model(hidden=3))
    arrays["W2"][1, 1] = np.nan
    replace_weights(url, version, npz(**arrays))


def _pickled(url: str, version: str) -> None:
    arrays: dict[str, Any] = model_arrays(random_model(hidden=3))
    arrays["b1"] = np.array([{"evil": 1}, 2, 3], dtype=object)
    replace_weights(url, version, npz(**arrays))


def _wrong_hidden_units(url: str, version: str) -> None:
    execute(
        url,
        "UPDATE model_versions SET metadata = jsonb_set(metadata::jsonb, '{hidden_units}', "
        "'4')::json WHERE version = %s",
        (version,),
    )


def _no_checksum(url: str, version: str) -> None:
    execute(
        url,
        "UPDATE model_versions SET metadata = (metadata::jsonb - 'weights_sha256')::json "
        "WHERE version = %s",
        (version,),
    )


def _future_format(url: str, version: str) -> None:
    execute(
        url,
        "UPDATE model_versions SET metadata = jsonb_set(metadata::jsonb, '{format_version}', "
        "'2')::json WHERE version = %s",
        (version,),
    )


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (_flip_a_byte, ChecksumMismatchError, "does not match its recorded sha256"),
        (_truncate, UnreadableModelError, "not a readable npz archive"),
        (_nan, NonFiniteWeightsError, "W2 holds NaN or infinite values"),
        (_pickled, UnreadableModelError, "allow_pickle"),
        (_wrong_hidden_units, ShapeError, "says hidden_units 4, the weights have 3"),
        (_no_checksum, UnreadableModelError, "has no weights_sha256"),
        (_future_format, UnreadableModelError, "format_version 2, this code reads 1"),
    ],
)
def test_a_damaged_row_is_refused_and_never_activated(
    stores: Stores,
    pg_url: str,
    damage: Callable[[str, str], None],
    error: type[CorruptModelError],
    message: str,
) -> None:
    good = stores.models.save(random_model(hidden=3, seed=1), activate=True)
    bad = stores.models.save(random_model(hidden=3, seed=2))
    damage(pg_url, bad)

    with pytest.raises(error, match=message):
        stores.models.load(bad)
    with pytest.raises(error, match=message):
        stores.models.activate(bad)
    assert stores.models.current() == good
    assert stores.models.activations() == [good]
    assert_same_model(stores.models.load(good).model, random_model(hidden=3, seed=1))


def test_a_version_and_its_activation_are_invisible_until_they_commit(
    stores: Stores, pg_url: str
) -> None:
    before = stores.models.save(random_model(seed=1), activate=True)
    reader = PostgresModelStore(pg_url)
    saved: list[str] = []
    # Another session holds the pointer table: save(activate=True) inserts its row, then
    # waits for the pointer inside its transaction.
    blocker = psycopg.connect(pg_url)
    try:
        blocker.execute("LOCK TABLE model_current IN EXCLUSIVE MODE")
        writer = threading.Thread(
            target=lambda: saved.append(stores.models.save(random_model(seed=2), activate=True))
        )
        writer.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        wait_for(lambda: execute(pg_url, waiting)[0][0] == 1, 10, "a writer waiting", 0.02)
        # the waiting transaction has already written into model_versions
        [(inserted,)] = execute(
            pg_url,
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = 'model_versions' AND l.mode = 'RowExclusiveLock' AND l.granted",
        )
        assert inserted == 1
        assert reader.versions() == [before]
        assert reader.current() == before
    finally:
        blocker.rollback()
        blocker.close()
    writer.join(10)
    assert len(saved) == 1
    assert reader.versions() == [before, saved[0]]
    assert reader.current() == saved[0]
    reader.close()


def test_a_read_only_database_refuses_writes_and_still_serves(stores: Stores, pg_url: str) -> None:
    version = stores.models.save(random_model(seed=1), activate=True)
    dbname = pg_url.rsplit("/", 1)[1]
    execute(pg_url, f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    store = PostgresModelStore(pg_url)  # new connections see the setting
    try:
        assert store.load(version).version == version
        with pytest.raises(StoreWriteError, match="cannot save the model: "):
            store.save(random_model(seed=2))
        with pytest.raises(StoreWriteError, match=f"cannot activate version {version}"):
            store.activate(version)
        with pytest.raises(StoreWriteError, match=f"cannot delete version {version}"):
            store.delete(version)
        assert store.versions() == [version]
    finally:
        store.close()


def test_the_bootstrap_lock_admits_one_replica_at_a_time(pg_url: str) -> None:
    first, second = PostgresModelStore(pg_url), PostgresModelStore(pg_url)
    entered = threading.Event()

    def take() -> None:
        with second.bootstrap_lock():
            entered.set()

    try:
        with first.bootstrap_lock():
            waiter = threading.Thread(target=take)
            waiter.start()
            assert not entered.wait(0.5)  # held by the first replica
        assert entered.wait(5)  # released with the block
        waiter.join(5)
    finally:
        first.close()
        second.close()


# -- the job store --------------------------------------------------------------------------


def job_scenario(jobs: Any) -> list[Any]:
    """The same calls against either job store; every answer and error, in order."""
    out: list[Any] = []

    def attempt(call: Callable[[], Any]) -> None:
        try:
            out.append(call())
        except JobError as error:
            out.append((type(error).__name__, str(error)))

    a = jobs.create(SPEC)
    out.append(a)
    attempt(lambda: jobs.create(OTHER_SPEC))
    out.append(jobs.start(a["job_id"], 4242))
    progress = {"epoch": 3, "epochs": 200, "loss": 0.5, "validation_accuracy": None}
    out.append(jobs.heartbeat(a["job_id"], progress))
    out.append(jobs.get(a["job_id"]))
    out.append(jobs.request_cancel(a["job_id"]))
    out.append(jobs.heartbeat(a["job_id"], None))
    out.append(jobs.finish(a["job_id"], "cancelled", error="training was cancelled after epoch 3"))
    out.append(jobs.finish(a["job_id"], "failed", error="too late"))
    attempt(lambda: jobs.request_cancel(a["job_id"]))
    out.append(jobs.heartbeat(a["job_id"], progress))

    b = jobs.create(OTHER_SPEC)
    out.append(jobs.start(b["job_id"], 4343))
    final = {"epoch": 50, "epochs": 50, "loss": 0.1}
    out.append(
        jobs.finish(
            b["job_id"],
            "succeeded",
            model_version="20261202T073315.123456Z-0a1b2c3d",
            activated=0,
            metrics={"train_accuracy": 0.96, "training_seconds": 0.1},
            epoch=50,
            progress=json.dumps(final),
        )
    )
    out.append(jobs.get(b["job_id"]))

    c = jobs.create(SPEC)
    out.append(jobs.request_cancel(c["job_id"]))
    out.append(jobs.start(c["job_id"], 1))  # cancelled while queued: never starts
    out.append(jobs.finish(c["job_id"], "cancelled", error="cancelled before training started"))
    out.append(jobs.recent(2))
    out.append(len(jobs.recent(10)))
    attempt(lambda: jobs.get("0" * 32))
    attempt(lambda: jobs.request_cancel("0" * 32))
    return out


def normalized(value: Any, ids: dict[str, str]) -> Any:
    """Job ids by order of appearance, times by their presence: what must agree."""
    if isinstance(value, dict):
        return {
            k: ("<time>" if v else None) if k.endswith("_at") else normalized(v, ids)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(normalized(v, ids) for v in value)
    if isinstance(value, str):
        for job_id in re.findall(r"\b[0-9a-f]{32}\b", value):
            ids.setdefault(job_id, f"<job {len(ids)}>")
            value = value.replace(job_id, ids[job_id])
        return value
    return value


def test_job_views_and_errors_equal_the_sqlite_stores(stores: Stores, tmp_path: Path) -> None:
    sqlite = JobStore(tmp_path / "jobs.sqlite3")
    sqlite.initialize()
    expected = job_scenario(sqlite)
    actual = job_scenario(stores.jobs)
    assert normalized(actual, {}) == normalized(expected, {})
    # and the times are the same ISO 8601 form
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00$"
    assert re.match(iso, actual[0]["created_at"])
    assert re.match(iso, actual[-4][0]["finished_at"])


def create_at_once(replicas: list[PostgresJobStore]) -> list[Any]:
    """Every replica calls create() at the same moment, each in its own thread."""
    barrier = threading.Barrier(len(replicas))
    results: list[Any] = []
    lock = threading.Lock()

    def create(jobs: PostgresJobStore) -> None:
        barrier.wait()
        try:
            result: Any = jobs.create(SPEC)
        except JobConflictError as error:
            result = error
        with lock:
            results.append(result)

    threads = [threading.Thread(target=create, args=(jobs,)) for jobs in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_one_of_many_concurrent_creates_succeeds(pg_url: str) -> None:
    replicas = [PostgresJobStore(pg_url, instance=f"replica-{i}") for i in range(8)]
    try:
        for _ in range(3):
            results = create_at_once(replicas)
            created = [r for r in results if isinstance(r, dict)]
            conflicts = [r for r in results if isinstance(r, JobConflictError)]
            assert len(created) == 1, results
            assert len(conflicts) == len(replicas) - 1
            winner = created[0]["job_id"]
            assert {error.job_id for error in conflicts} == {winner}
            assert all(f"training job {winner} is still running" in str(e) for e in conflicts)
            assert replicas[0].finish(winner, "failed", error="ended by the test")
        [(count,)] = execute(pg_url, "SELECT count(*) FROM jobs")
        assert count == 3
    finally:
        for jobs in replicas:
            jobs.close()


def test_a_dead_replicas_job_is_failed_by_a_surviving_replica(pg_url: str) -> None:
    accepting = PostgresJobStore(pg_url, heartbeat_timeout=1.0, instance="replica-a")
    surviving = PostgresJobStore(pg_url, heartbeat_timeout=1.0, instance="replica-b")
    try:
        job = accepting.create(SPEC)["job_id"]
        assert accepting.start(job, 999)
        beat = time.monotonic()  # before the last heartbeat's timestamp is taken
        assert accepting.heartbeat(job, None) == (True, False)
        [(accepted_by, run_by)] = execute(
            pg_url, "SELECT accepted_by, run_by FROM jobs WHERE job_id = %s", (job,)
        )
        assert accepted_by == "replica-a"
        assert run_by.endswith(":999")
        assert surviving.get(job)["status"] == "running"
        # No heartbeat for longer than the timeout: its replica is gone. Failed then, and
        # not before (5 s: the 1 s timeout with room for a loaded machine).
        view = wait_for(
            lambda: (v := surviving.get(job))["status"] != "running" and v, 5.0, "the job reaped"
        )
        silent = time.monotonic() - beat
        print(f"\njob failed by the surviving replica after {silent:.2f} s without a heartbeat")
        assert silent >= surviving.heartbeat_timeout
        assert view["status"] == "failed"
        assert view["error"] == INTERRUPTED
        assert view["finished_at"] is not None
        assert accepting.heartbeat(job, None) == (False, False)  # the child learns it
        assert not accepting.finish(job, "succeeded")
        assert surviving.create(SPEC)["status"] == "queued"  # the slot is free again
    finally:
        accepting.close()
        surviving.close()


def test_a_queued_job_gets_the_grace_to_start(stores: Stores, pg_url: str) -> None:
    job = stores.jobs.create(SPEC)["job_id"]
    age = "UPDATE jobs SET heartbeat_at = clock_timestamp() - make_interval(secs => %s)"
    execute(pg_url, age, (stores.jobs.heartbeat_timeout + 10,))
    assert stores.jobs.get(job)["status"] == "queued"  # still within QUEUED_GRACE
    execute(pg_url, age, (stores.jobs.heartbeat_timeout + 31,))
    stores.jobs.reap()
    assert stores.jobs.get(job)["status"] == "failed"


def test_delete_removes_only_ended_jobs(stores: Stores) -> None:
    jobs = stores.jobs
    job = jobs.create(SPEC)["job_id"]
    with pytest.raises(JobActiveError, match=f"training job {job} is still queued"):
        jobs.delete(job)
    jobs.start(job, 1)
    with pytest.raises(JobActiveError, match="is still running"):
        jobs.delete(job)
    jobs.finish(job, "failed", error="x")
    jobs.delete(job)
    with pytest.raises(JobNotFoundError, match=f"no training job {job}"):
        jobs.get(job)
    with pytest.raises(JobNotFoundError, match=f"no training job {job}"):
        jobs.delete(job)
    assert jobs.recent(10) == []


def test_finish_refuses_what_is_not_a_job_field(stores: Stores) -> None:
    job = stores.jobs.create(SPEC)["job_id"]
    with pytest.raises(ValueError, match="not a job field finish\\(\\) sets: status_x"):
        stores.jobs.finish(job, "failed", status_x="1; DROP TABLE jobs")
    with pytest.raises(ValueError, match="not a terminal status: running"):
        stores.jobs.finish(job, "running")
    assert stores.jobs.get(job)["status"] == "queued"


# -- migrations -----------------------------------------------------------------------------


def tables(url: str) -> set[str]:
    rows = execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


def test_migrations_create_the_schema_once(empty_url: str) -> None:
    with psycopg.connect(empty_url, autocommit=True) as conn:
        assert migrations.current_version(conn) == 0
        assert migrations.apply(conn) == migrations.LATEST
        assert migrations.apply(conn) == migrations.LATEST
        assert migrations.current_version(conn) == migrations.LATEST
    rows = execute(empty_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [row[0] for row in rows] == [step.version for step in migrations.MIGRATIONS]
    assert tables(empty_url) == {
        "schema_migrations",
        "model_versions",
        "model_current",
        "model_activations",
        "jobs",
        "routing",
        "routing_history",
        "version_counts",
        "paired_feedback",
        "drift_rows",
    }
    jobs = PostgresJobStore(empty_url)
    try:
        assert jobs.initialize() == migrations.LATEST
        assert jobs.schema_version() == migrations.LATEST
    finally:
        jobs.close()


def test_migrations_are_safe_when_replicas_start_at_once(empty_url: str) -> None:
    # Each process connects and says so, then waits for the word to go: all apply at once.
    script = (
        "import sys, psycopg\n"
        "from service.postgres import migrations\n"
        "conn = psycopg.connect(sys.argv[1], autocommit=True)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(migrations.apply(conn))\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_url],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=60) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert stdout.strip() == str(migrations.LATEST)
    rows = execute(empty_url, "SELECT version, count(*) FROM schema_migrations GROUP BY version")
    assert sorted(rows) == [(step.version, 1) for step in migrations.MIGRATIONS]


# -- activation notifications ----------------------------------------------------------------


def start_listener(url: str) -> tuple[Listener, queue.Queue[str | None]]:
    heard: queue.Queue[str | None] = queue.Queue()
    listener = Listener(url, heard.put)
    listener.start()
    assert listener.connected.wait(10)
    assert heard.get(timeout=5) is None  # on connecting: "look at the pointer now"
    return listener, heard


def test_the_listener_hears_an_activation_within_a_second(stores: Stores, pg_url: str) -> None:
    listener, heard = start_listener(pg_url)
    try:
        version = stores.models.save(random_model(seed=1))
        assert heard.empty()  # a save alone is not an activation
        stores.models.activate(version)
        assert heard.get(timeout=1.0) == version
        other = stores.models.save(random_model(seed=2), activate=True)
        assert heard.get(timeout=1.0) == other
    finally:
        listener.stop()
    assert not listener.is_alive()


def test_the_listener_reconnects_after_the_server_restarts(
    postgres: PgCluster, stores: Stores, pg_url: str
) -> None:
    listener, heard = start_listener(pg_url)
    try:
        postgres.stop()
        try:
            wait_for(lambda: not listener.connected.is_set(), 10, "listener disconnected", 0.02)
        finally:
            postgres.start()
        assert listener.connected.wait(10)
        assert listener.connections == 2
        assert heard.get(timeout=5) is None  # told to look, since it may have missed one
        version = stores.models.save(random_model(seed=3), activate=True)
        assert heard.get(timeout=1.0) == version
    finally:
        listener.stop()


# -- outages -----------------------------------------------------------------------------------


def timed(call: Callable[[], Any], error: type[Exception]) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(error) as caught:
        call()
    return time.monotonic() - started, str(caught.value)


def test_an_outage_answers_unavailable_quickly_and_recovers_by_itself(
    postgres: PgCluster, stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    version = stores.models.save(random_model(seed=1), activate=True)
    job = stores.jobs.create(SPEC)["job_id"]
    caplog.set_level(logging.WARNING, logger="iris.postgres")
    postgres.stop()
    try:
        calls: list[tuple[Callable[[], Any], type[Exception]]] = [
            (lambda: stores.jobs.get(job), JobsUnavailableError),
            (lambda: stores.jobs.create(SPEC), JobsUnavailableError),
            (stores.models.current, StoreUnavailableError),
            (lambda: stores.models.load(version), StoreUnavailableError),
            (lambda: stores.models.save(random_model(seed=2)), StoreUnavailableError),
            (lambda: stores.models.activate(version), StoreUnavailableError),
        ]
        for call, error in calls:
            seconds, message = timed(call, error)
            assert seconds < 8, message  # a few seconds at most, never a hang
            assert "is unavailable" in message
            assert "127.0.0.1" not in message  # a message may reach a client: no address
            assert str(postgres.port) not in message
    finally:
        postgres.start()
    [outage] = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert f"127.0.0.1:{postgres.port}" in outage  # where, in the log, once

    def back() -> bool:
        try:
            return stores.models.current() == version
        except StoreUnavailableError:
            return False

    wait_for(back, 15, "the store back", 0.02)
    assert stores.jobs.get(job)["status"] == "queued"
    assert stores.models.save(random_model(seed=3)) in stores.models.versions()


def test_a_database_that_is_not_there_fails_fast_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, logger="iris.postgres")
    stores = open_stores(f"postgresql://iris:secret@127.0.0.1:{port}/iris")
    try:
        seconds, message = timed(lambda: stores.jobs.get("0" * 32), JobsUnavailableError)
        assert seconds < 8  # a bound: a few seconds of connect timeout at most, never a hang
        assert message == "the jobs database is unavailable"
        assert f"iris@127.0.0.1:{port}/iris" in caplog.text  # the log says where
        assert "secret" not in caplog.text
        seconds, message = timed(stores.models.versions, StoreUnavailableError)
        # A bound, not a speed target: the failure is remembered for a moment, so no second
        # wait (which would be the pool's 3 s timeout).
        assert seconds < 1
        assert "the database is unavailable" in message
    finally:
        stores.close()


# -- copying a data directory ----------------------------------------------------------------


def data_dir_with_versions(tmp_path: Path) -> tuple[Path, list[str]]:
    files = ModelStore(tmp_path / "data" / "models")
    a = files.save(random_model(seed=1), {"history": [{"epoch": 1}]})
    b = files.save(random_model(seed=2), activate=True)
    c = files.save(random_model(seed=3, hidden=6))
    return tmp_path / "data", [a, b, c]


def test_migrate_copies_every_version_and_current_and_is_idempotent(
    tmp_path: Path, pg_url: str
) -> None:
    data_dir, (a, b, c) = data_dir_with_versions(tmp_path)
    files = ModelStore(data_dir / "models")
    report = migrate_data_dir(data_dir, pg_url)
    assert report.copied == [a, b, c]
    assert report.refused == []
    assert report.current == b
    store = PostgresModelStore(pg_url)
    try:
        assert store.versions() == [a, b, c]
        assert store.current() == b
        for version in (a, b, c):
            [(weights, metadata)] = execute(
                pg_url,
                "SELECT weights, metadata::text FROM model_versions WHERE version = %s",
                (version,),
            )
            assert bytes(weights) == (files.path(version) / "weights.npz").read_bytes()
            assert metadata == (files.path(version) / "model.json").read_text()
            assert_same_model(store.load(version).model, files.load(version).model)

        again = migrate_data_dir(data_dir, pg_url)
        assert again.copied == []
        assert again.present == [a, b, c]
        assert again.current == b

        store.activate(c)  # the database moved on: a later run must not move it back
        third = migrate_data_dir(data_dir, pg_url)
        assert third.current == c
        assert store.current() == c
        assert any(f"kept the database's current version {c}" in n for n in third.notes)
    finally:
        store.close()


def test_migrate_refuses_a_corrupt_version_and_copies_the_rest(tmp_path: Path, pg_url: str) -> None:
    data_dir, (a, b, c) = data_dir_with_versions(tmp_path)
    weights = data_dir / "models" / b / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[300] ^= 0xFF
    weights.write_bytes(bytes(data))

    report = migrate_data_dir(data_dir, pg_url)
    assert report.copied == [a, c]
    [(version, reason)] = report.refused
    assert version == b
    assert "does not match its recorded sha256" in reason
    assert f"CURRENT names {b}, which was refused: not activated" in report.notes
    assert report.current is None
    store = PostgresModelStore(pg_url)
    try:
        assert store.versions() == [a, c]
        with pytest.raises(NoCurrentModelError):
            store.current()
    finally:
        store.close()


def test_migrate_command_prints_a_line_per_version(tmp_path: Path, pg_url: str) -> None:
    data_dir, (a, b, c) = data_dir_with_versions(tmp_path)
    command = [sys.executable, "-m", "service.postgres.migrate", str(data_dir)]

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )

    env = os.environ | {"IRIS_DATABASE_URL": pg_url}
    first = run(env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"database schema version {migrations.LATEST}",
        f"copied {a}",
        f"copied {b}",
        f"copied {c}",
        f"activated {b} (CURRENT)",
        "3 copied, 0 already there, 0 refused",
    ]
    second = run(env)
    assert second.returncode == 0
    assert "0 copied, 3 already there, 0 refused" in second.stdout

    no_url = {k: v for k, v in os.environ.items() if k != "IRIS_DATABASE_URL"}
    missing = run(no_url)
    assert missing.returncode == 2
    assert "IRIS_DATABASE_URL is not set" in missing.stderr
