"""The per-worker registry: following models/CURRENT, falling back, the pinned-version cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from model.data import load_iris
from model.errors import ModelNotFoundError
from model.persistence import ModelStore, StoredModel
from model.train import Hyperparameters, train
from service.registry import NotReadyError, Registry


@pytest.fixture(scope="module")
def trained_model() -> object:
    return train(load_iris(), Hyperparameters(epochs=2)).model


class GatedStore(ModelStore):
    """Loading one chosen version blocks until the test opens the gate."""

    def __init__(self, root: Path, slow_version: str) -> None:
        super().__init__(root)
        self.slow_version = slow_version
        self.entered = threading.Event()
        self.gate = threading.Event()

    def load(self, version: str) -> StoredModel:
        if version == self.slow_version:
            self.entered.set()
            assert self.gate.wait(10)
        return super().load(version)


def test_slow_load_of_an_older_current_never_overwrites_a_newer_one(
    tmp_path: Path, trained_model: object
) -> None:
    plain = ModelStore(tmp_path)
    a = plain.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    b = plain.save(trained_model, {})  # type: ignore[arg-type]
    c = plain.save(trained_model, {})  # type: ignore[arg-type]
    store = GatedStore(tmp_path, slow_version=b)
    registry = Registry(store)
    registry.refresh()
    assert registry.get().version == a

    plain.activate(b)
    poller = threading.Thread(target=registry.refresh)
    poller.start()
    assert store.entered.wait(10)  # the poller is loading b
    plain.activate(c)
    activator = threading.Thread(target=registry.refresh)
    activator.start()
    activator.join(0.5)  # with the refresh lock it waits for the poller
    store.gate.set()
    poller.join(10)
    activator.join(10)
    registry.refresh()
    assert registry.get().version == c


def test_registry_without_any_version_is_not_ready(tmp_path: Path) -> None:
    registry = Registry(ModelStore(tmp_path))
    registry.refresh()
    with pytest.raises(NotReadyError, match="no version that was active before can be served"):
        registry.get()


def test_fallback_serves_the_latest_earlier_activation_never_an_unactivated_version(
    tmp_path: Path, trained_model: object
) -> None:
    store = ModelStore(tmp_path)
    a = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    b = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    store.activate(a)  # rolled back: a is the latest activation before c
    c = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    store.save(trained_model, {})  # type: ignore[arg-type]  # newer, never activated
    (tmp_path / c / "weights.npz").write_bytes(b"truncated")
    registry = Registry(store)
    registry.refresh()
    assert registry.get().version == a
    assert registry.problem is not None
    assert f"serving {a}" in registry.problem
    (tmp_path / a / "weights.npz").write_bytes(b"truncated")
    registry = Registry(store)
    registry.refresh()
    assert registry.get().version == b


def test_pinned_versions_are_served_from_a_bounded_cache(
    tmp_path: Path, trained_model: object
) -> None:
    store = ModelStore(tmp_path)
    versions = [store.save(trained_model, {}, activate=True) for _ in range(3)]  # type: ignore[arg-type]
    registry = Registry(store, cache_size=1)
    registry.refresh()
    assert registry.get(versions[0]).version == versions[0]
    assert registry.get(versions[0]) is registry.get(versions[0])  # cached
    registry.get(versions[1])
    assert len(registry._pinned) == 1


def test_a_current_version_that_failed_to_load_is_retried_once_repaired(
    tmp_path: Path, trained_model: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.registry

    monkeypatch.setattr(service.registry, "RETRY_SECONDS", 0.0)
    store = ModelStore(tmp_path)
    good = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    broken = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    weights = tmp_path / broken / "weights.npz"
    intact = weights.read_bytes()
    weights.write_bytes(b"damaged")
    registry = Registry(store)
    registry.refresh()
    assert registry.get().version == good
    assert registry.problem is not None
    weights.write_bytes(intact)  # repaired (say, restored from a backup)
    registry.refresh()
    assert registry.get().version == broken
    assert registry.problem is None


def test_a_job_cancelled_while_queued_never_starts(tmp_path: Path) -> None:
    from service.job_store import JobSpec, JobStore

    jobs = JobStore(tmp_path / "jobs.sqlite3")
    jobs.initialize()
    job = jobs.create(
        JobSpec(hyperparameters={"epochs": 5}, dataset={"source": "iris", "rows": 150})
    )
    jobs.request_cancel(job["job_id"])
    assert jobs.start(job["job_id"], pid=1) is False
    assert jobs.get(job["job_id"])["status"] == "queued"
    assert jobs.finish(job["job_id"], "cancelled") is True
    assert jobs.get(job["job_id"])["status"] == "cancelled"


def test_the_pinned_cache_holds_dozens_of_versions(tmp_path: Path, trained_model: object) -> None:
    store = CountingStore(tmp_path)
    versions = [store.save(trained_model, {}, activate=True) for _ in range(12)]  # type: ignore[arg-type]
    registry = Registry(store)
    registry.refresh()
    store.loads.clear()
    for _ in range(3):
        for version in versions[:-1]:  # the last one is the active model
            assert registry.get(version).version == version
    assert len(store.loads) == 11, store.loads  # each loaded once, then served from memory


def test_cached_never_touches_the_disk(tmp_path: Path, trained_model: object) -> None:
    store = CountingStore(tmp_path)
    old = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    registry = Registry(store)
    registry.refresh()
    store.loads.clear()
    assert registry.cached(old) is None
    assert store.loads == []
    registry.get(old)
    assert registry.cached(old) is not None


class CountingStore(ModelStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loads: list[str] = []

    def load(self, version: str) -> StoredModel:
        self.loads.append(version)
        return super().load(version)


def test_the_poller_check_is_a_read_of_current_and_true_only_on_a_change(
    tmp_path: Path, trained_model: object
) -> None:
    store = CountingStore(tmp_path)
    first = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    second = store.save(trained_model, {})  # type: ignore[arg-type]
    registry = Registry(store)
    registry.refresh()
    store.loads.clear()
    assert not registry.needs_refresh()
    store.activate(first)  # rewritten with the same content: nothing to do
    assert not registry.needs_refresh()
    store.activate(second)
    store.loads.clear()
    assert registry.needs_refresh()
    assert store.loads == []  # the check itself never loads
    assert registry.refresh()
    assert registry.get().version == second
    assert not registry.needs_refresh()


def test_a_store_without_files_is_always_asked_in_full(
    tmp_path: Path, trained_model: object
) -> None:
    class NoFiles:
        """A store like the database-backed one: no root directory, no CURRENT file."""

        def __init__(self, inner: ModelStore) -> None:
            self.inner = inner

        def current(self) -> str:
            return self.inner.current()

        def load(self, version: str) -> StoredModel:
            return self.inner.load(version)

    store = ModelStore(tmp_path)
    store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    registry = Registry(NoFiles(store))  # type: ignore[arg-type]
    registry.refresh()
    assert registry.needs_refresh()
    second = store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    assert registry.refresh()
    assert registry.get().version == second


def test_a_deleted_version_leaves_the_pinned_cache(tmp_path: Path, trained_model: object) -> None:
    store = CountingStore(tmp_path)
    pinned, other = (store.save(trained_model, {}) for _ in range(2))  # type: ignore[arg-type]
    store.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    registry = Registry(store)
    registry.refresh()
    registry.get(pinned)
    registry.get(other)
    assert registry.pinned() == [pinned, other]
    registry.forget(pinned)  # the worker that deleted it: at once
    assert registry.cached(pinned) is None
    elsewhere = ModelStore(tmp_path)  # another worker deletes the other one
    elsewhere.delete(pinned)
    elsewhere.delete(other)
    assert registry.cached(other) is not None  # still in memory until the poller looks
    assert registry.prune() == [other]
    assert registry.pinned() == []
    for version in (pinned, other):
        with pytest.raises(ModelNotFoundError):
            registry.get(version)


def test_a_store_without_files_is_pruned_by_its_listing(
    tmp_path: Path, trained_model: object
) -> None:
    class Listed:
        """Like the database-backed store: no root directory to look in, only a listing."""

        def __init__(self, inner: ModelStore) -> None:
            self.inner = inner

        def versions(self) -> list[str]:
            return self.inner.versions()

        def load(self, version: str) -> StoredModel:
            return self.inner.load(version)

    files = ModelStore(tmp_path)
    kept, gone = (files.save(trained_model, {}) for _ in range(2))  # type: ignore[arg-type]
    registry = Registry(Listed(files))  # type: ignore[arg-type]
    registry.get(kept)
    registry.get(gone)
    files.delete(gone)
    assert registry.prune() == [gone]
    assert registry.pinned() == [kept]


def test_a_load_that_spans_a_deletion_is_not_cached(tmp_path: Path, trained_model: object) -> None:
    plain = ModelStore(tmp_path)
    version = plain.save(trained_model, {})  # type: ignore[arg-type]
    plain.save(trained_model, {}, activate=True)  # type: ignore[arg-type]
    store = GatedStore(tmp_path, slow_version=version)
    registry = Registry(store)
    registry.refresh()
    loading = threading.Thread(target=registry.get, args=(version,))
    loading.start()
    assert store.entered.wait(10)
    registry.forget(version)  # deleted while the load was on its way
    store.gate.set()
    loading.join(10)
    assert registry.pinned() == []


def test_a_jobs_database_from_before_the_note_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    from service.job_store import SCHEMA, JobSpec, JobStore

    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:  # as an older release made it, with one ended job
        db.executescript(SCHEMA.replace(",\n    note TEXT", ""))
        db.execute(
            "INSERT INTO jobs (job_id, status, created_at, heartbeat_at, epochs, "
            "hyperparameters, dataset, activate) "
            "VALUES ('0123456789abcdef0123456789abcdef', 'succeeded', 1, 1, 5, '{}', '{}', 1)"
        )
    jobs = JobStore(path)
    [old] = jobs.recent(10)
    assert old["note"] is None  # read by a worker that could not add the column
    jobs.initialize()
    jobs.initialize()  # the column is added once
    assert jobs.get(old["job_id"])["note"] is None
    spec = JobSpec(hyperparameters={"epochs": 5}, dataset={"source": "iris"}, note="second try")
    assert jobs.get(jobs.create(spec)["job_id"])["note"] == "second try"
