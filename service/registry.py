"""The model a worker serves, and its swap when models/CURRENT changes.

A request takes ``registry.active`` once and uses that object to the end, so a swap (one
attribute assignment) never shows a request a mix of two models.

Versions asked for by id (pinned) are kept loaded in a small cache. A deleted version leaves
it at once on the worker that deleted it (:meth:`Registry.forget`), and on every other worker
and replica at the poller's next :meth:`Registry.prune` (IRIS_MODEL_POLL_SECONDS for the data
directory, a second for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path

from model.data import load_iris
from model.errors import ModelStoreError
from model.persistence import CURRENT, ModelStore, StoredModel
from model.train import Hyperparameters, train
from service import metrics
from service.stores import ModelStoreLike

log = logging.getLogger("iris.registry")
RETRY_SECONDS = 5.0
# Versions kept loaded for pinned requests (a 4-unit model is about 1 kB of arrays).
PINNED_CACHE_SIZE = 64


class NotReadyError(Exception):
    """No model can be served yet."""


class Registry:
    def __init__(self, store: ModelStoreLike, cache_size: int = PINNED_CACHE_SIZE) -> None:
        self.store = store
        self.active: StoredModel | None = None
        self.problem: str | None = None
        self._seen: str | None = None
        self._seen_text: bytes | None = None  # CURRENT's bytes when last refreshed
        self._retry_at = math.inf  # when to look again at a CURRENT that failed to load
        self._reported = ""
        self._pinned: OrderedDict[str, StoredModel] = OrderedDict()
        self._forgotten = 0  # counts forget() calls: a load that spans one is not cached
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    def refresh(self) -> bool:
        """Follow models/CURRENT; returns True when the served version changed.

        The poller and the activate route both call this from pool threads; the lock keeps a
        slow load of an older CURRENT from landing after a newer one.
        """
        with self._refresh_lock:
            self._seen_text = self.current_text()  # before reading: a later change is seen
            try:
                version: str | None = self.store.current()
                marker = version
            except ModelStoreError as error:
                version, marker, problem = None, f"error: {error}", error
            if marker == self._seen and time.monotonic() < self._retry_at:
                return False
            self._seen = marker
            self._retry_at = math.inf
            before = self.active.version if self.active else None
            try:
                if version is None:
                    raise problem
                self.active = self.store.load(version)
                self.problem = None
            except ModelStoreError as error:
                self._fall_back(error, version)
                self._retry_at = time.monotonic() + RETRY_SECONDS  # it may be repaired
            after = self.active.version if self.active else None
            if after != before:
                log.info("serving model version %s (was %s)", after, before)
                metrics.set_active_model(after, before)
            return after != before

    def current_text(self) -> bytes | None:
        """CURRENT's raw bytes (None when unreadable): one small read, no validation."""
        root = getattr(self.store, "root", None)
        if not isinstance(root, Path):
            return None
        try:
            return (root / CURRENT).read_bytes()[:256]
        except OSError:
            return None

    def needs_refresh(self) -> bool:
        """The poller's cheap check, fit for the event loop: CURRENT changed, or a retry of a
        version that failed to load is due. Only then does :meth:`refresh` (which may load
        a model) run, in a thread."""
        if self.problem is not None or not isinstance(getattr(self.store, "root", None), Path):
            return True  # serving a fallback or nothing, or a store without files: look fully
        return self.current_text() != self._seen_text or time.monotonic() >= self._retry_at

    def _fall_back(self, error: ModelStoreError, failing: str | None) -> None:
        """CURRENT is missing or names a bad version: keep (or find) a valid one, say why.

        Only a version that was active before (models/ACTIVATIONS) may stand in: a version
        stored but never activated may have failed its quality gate.
        """
        if self.active is not None:
            self.problem = f"{error}; still serving {self.active.version}"
        else:
            try:
                earlier = self.store.activations()
            except ModelStoreError:  # the store itself is unavailable: nothing to fall back on
                earlier = []
            for version in reversed(earlier):
                if version == failing:
                    continue
                try:
                    self.active = self.store.load(version)
                except ModelStoreError:
                    continue
                self.problem = f"{error}; serving {version}, the version active before it"
                break
            else:
                self.problem = f"{error}; no version that was active before can be served"
        if str(error) != self._reported:  # retries of the same failure stay quiet
            self._reported = str(error)
            log.error("model store: %s", self.problem)

    def cached(self, version: str | None = None) -> StoredModel | None:
        """Like :meth:`get`, without touching the disk: None for a version not loaded yet."""
        active = self.active
        if version is None or (active is not None and version == active.version):
            if active is None:
                raise NotReadyError(self.problem or "no model is loaded yet")
            return active
        with self._lock:
            stored = self._pinned.get(version)
            if stored is not None:
                self._pinned.move_to_end(version)
            return stored

    def get(self, version: str | None = None) -> StoredModel:
        """The active model, or a stored version by id (verified, kept in a small cache)."""
        stored = self.cached(version)
        if stored is not None:
            return stored
        assert version is not None  # cached() answers for the active model
        with self._lock:
            forgotten = self._forgotten
        stored = self.store.load(version)
        with self._lock:
            if forgotten == self._forgotten:  # no version was deleted while this one loaded
                self._pinned[version] = stored
                while len(self._pinned) > self._cache_size:
                    self._pinned.popitem(last=False)
        return stored

    def forget(self, version: str) -> None:
        """Drop a deleted version from the pinned cache: the next request for it asks the
        store (and gets 404)."""
        with self._lock:
            self._pinned.pop(version, None)
            self._forgotten += 1

    def pinned(self) -> list[str]:
        """The versions kept loaded for pinned requests, least recently used first."""
        with self._lock:
            return list(self._pinned)

    def prune(self) -> list[str]:
        """Forget pinned versions the store no longer holds (deleted by another worker or
        replica); returns them. A store that cannot be read forgets nothing."""
        pinned = self.pinned()
        if not pinned:
            return []
        root = getattr(self.store, "root", None)
        if isinstance(root, Path):  # a stat per pinned version, not a listing of them all
            gone = [version for version in pinned if not (root / version).is_dir()]
        else:
            try:
                stored = set(self.store.versions())
            except ModelStoreError:
                return []
            gone = [version for version in pinned if version not in stored]
        for version in gone:
            self.forget(version)
        return gone


def ensure_default_model(store: ModelStoreLike, seed: int) -> str | None:
    """On an empty store, train and activate the default model; returns its version.

    A lock makes several workers (or replicas) starting at once train it only once: a file
    lock beside the versions, or the database's lock for a shared store.
    """
    if isinstance(store, ModelStore):
        return ensure_default_files(store, seed)
    if store.versions():
        return None
    with store.bootstrap_lock():  # type: ignore[attr-defined]
        if store.versions():
            return None
        return train_default(store, seed)


def ensure_default_files(store: ModelStore, seed: int) -> str | None:
    if store.versions():
        store.clean()
        with contextlib.suppress(ModelStoreError):  # a read-only data directory still serves
            store.adopt_current()
        return None  # no lock needed, so a read-only data directory still serves
    store.root.mkdir(parents=True, exist_ok=True)
    lock_path: Path = store.root / ".bootstrap.lock"
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            store.clean()
            if store.versions():
                return None
            return train_default(store, seed)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def train_default(store: ModelStoreLike, seed: int) -> str:
    """Train the default model on the shipped data, store and activate it."""
    started = time.perf_counter()
    hp = Hyperparameters(seed=seed)
    dataset = load_iris()
    result = train(dataset, hp)
    seconds = time.perf_counter() - started
    info = result.record(hp) | {
        "data": {"source": "iris", "rows": 150},
        "data_sha256": dataset.sha256(),
        "training_seconds": seconds,
        "job_id": None,  # no job made it
        "note": None,
    }
    version = store.save(result.model, info, activate=True)
    log.info("trained the default model %s in %.2f s", version, seconds)
    return version
