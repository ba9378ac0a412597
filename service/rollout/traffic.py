"""One worker's side of the rollout: which version answers, and what it counts.

**Choosing.** A request that pins no version goes to the canary with probability ``weight``;
with an ``X-Routing-Key`` header, to the canary when the key's point
(:func:`~service.rollout.plan.key_point`) is below ``weight``, so a key always meets the
same version. Without a canary the choice is one attribute read.

**Counting without a write per request.** Each answer adds to this worker's tallies in memory
(rows served per version, the rows themselves for the drift window) under a lock held for a
few assignments; requests stable answered are queued for the shadow. Two daemon threads do
the rest off the requests' path:

- the **shadow** thread computes the queued rows with the shadow version, a batch at a time,
  and counts how many classes agree with stable's (a full queue drops rows, counted in
  ``iris_shadow_dropped_rows_total``, and never blocks a request);
- the **flusher** adds the tallies to the store every ``IRIS_MONITOR_FLUSH_SECONDS`` in one
  transaction (a failed flush keeps them for the next), reloads the plan when it changed, and
  recomputes the drift gauge.

A worker that dies loses at most one flush interval of counts and rows; never a plan change
or a decision, which are written before they are applied.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from model.data import FEATURES, load_iris
from model.errors import ModelStoreError
from model.network import FloatArray, forward
from model.persistence import StoredModel
from model.reference import feature_psi, input_reference, normal_reference
from service import metrics
from service.registry import NotReadyError, Registry
from service.rollout.plan import Canary, Plan, key_point
from service.rollout.store import RolloutStore

log = logging.getLogger("iris.rollout")
ROUTING_HEADER = "x-routing-key"
_ROUTING_HEADER = ROUTING_HEADER.encode()
SHADOW_QUEUE_ROWS = 20_000  # rows waiting for the shadow; more are dropped, and counted
DRIFT_EVERY_SECONDS = 5.0  # how often the flusher recomputes the drift gauge
MIN_DRIFT_ROWS = 100  # fewer rows in the window (or the whole window, if smaller): no PSI


def routing_key(headers: Iterable[tuple[Any, Any]] | None) -> bytes | None:
    """The X-Routing-Key of raw headers: ASGI's (bytes, bytes) or gRPC metadata's (str, str)
    pairs, lower-case names both."""
    for name, value in headers or ():
        if name in (_ROUTING_HEADER, ROUTING_HEADER):
            return value if isinstance(value, bytes) else str(value).encode()
    return None


class Traffic:
    """This worker's plan, its choice of version, and its tallies."""

    def __init__(
        self,
        store: RolloutStore,
        registry: Registry,
        *,
        window: int,
        flush_seconds: float,
        threshold: float,
    ) -> None:
        self.store = store
        self.registry = registry
        self.window = window
        self.flush_seconds = flush_seconds
        self.threshold = threshold
        self.plan = Plan()
        self.canary: Canary | None = None
        self.shadow: str | None = None
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}
        self._chunks: deque[Any] = deque()  # recent input rows, in request order
        self._rows = 0
        self._queue: deque[tuple[str, Any, Any]] = deque()  # (shadow, rows, stable's classes)
        self._queued = 0
        self._shadowed: dict[str, tuple[int, int]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._references: dict[str, dict[str, Any]] = {}
        self._failing = ""
        self.ready = False

    # -- on the request's path --------------------------------------------------------------

    def choose(self, headers: Iterable[tuple[Any, Any]] | None) -> str | None:
        """The version a request that pins none goes to: the canary's, or None (stable)."""
        canary = self.canary
        if canary is None:
            return None
        key = routing_key(headers)
        point = random.random() if key is None else key_point(key)
        return canary.version if point < canary.weight else None

    def served(self, version: str, rows: Sequence[Any] | FloatArray, classes: Any,
               by_stable: bool) -> None:  # fmt: skip
        """Count the rows ``version`` answered; keep them for the drift window, and queue
        them for the shadow when stable answered (``classes``: stable's class indices)."""
        n = len(rows)
        with self._lock:
            self._served[version] = self._served.get(version, 0) + n
            self._chunks.append(rows)
            self._rows += n
            while self._rows - len(self._chunks[0]) >= self.window:
                self._rows -= len(self._chunks.popleft())
            shadow = self.shadow
            if by_stable and shadow is not None:
                if self._queued + n <= SHADOW_QUEUE_ROWS:
                    self._queue.append((shadow, rows, classes))
                    self._queued += n
                else:
                    metrics.SHADOW_DROPPED.inc(n)
                    shadow = None
        if by_stable and shadow is not None:
            self._wake.set()

    def counted(self, version: str, n: int) -> None:
        """Count rows ``version`` answered that are not predictions (/gradients)."""
        with self._lock:
            self._served[version] = self._served.get(version, 0) + n

    # -- the plan ---------------------------------------------------------------------------

    def apply(self, plan: Plan) -> None:
        """Route by ``plan`` from now on (a newer one than this worker's, or the same)."""
        if plan.revision < self.plan.revision:
            return
        self.plan = plan
        self.canary = plan.canary
        self.shadow = plan.shadow.version if plan.shadow else None
        for version in plan.versions():  # loaded now, not by the first request it answers
            try:
                self.registry.get(version)
            except ModelStoreError as error:
                log.warning("routing names version %s, which cannot be loaded: %s",
                                version, error)  # fmt: skip

    def prepare(self) -> None:
        """The store's tables made, and the plan applied (the flusher retries until done)."""
        self.store.initialize()
        self.reload()
        self.ready = True

    def reload(self) -> Plan:
        """Read the plan from the store and apply it if it changed."""
        plan = self.store.plan()
        if plan.revision != self.plan.revision:
            self.apply(plan)
        return plan

    # -- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._flush_loop, "iris-flush"), (self._shadow_loop, "iris-shadow")):
            thread = threading.Thread(target=target, daemon=True, name=name)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads; the shadow's last batch and one last flush are written."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._shadow_batch()
        self.flush()

    def _flush_loop(self) -> None:
        drift_at = 0.0
        while not self._stopping.wait(self.flush_seconds):
            try:
                if not self.ready:
                    self.prepare()
                self.flush()
                self.reload()
                if time.monotonic() >= drift_at:
                    drift_at = time.monotonic() + DRIFT_EVERY_SECONDS
                    self.drift()
                self._failing = ""
            except (ModelStoreError, NotReadyError) as error:
                if str(error) != self._failing:  # once per outage, not once per tick
                    self._failing = str(error)
                    log.warning("monitoring: %s; counts are kept for the next flush", error)
            except Exception:
                log.exception("monitoring: the flush failed")

    def flush(self) -> None:
        """Add this worker's tallies to the store; on failure they wait for the next."""
        with self._lock:
            served, self._served = self._served, {}
            shadowed, self._shadowed = self._shadowed, {}
            chunks = list(self._chunks)
            self._chunks.clear()
            self._rows = 0
        if not served and not shadowed and not chunks:
            return
        rows = stack(chunks) if chunks else None
        try:
            self.store.flush(served, shadowed, rows, self.window)
        except BaseException:
            with self._lock:  # back in, for the next flush
                for version, n in served.items():
                    self._served[version] = self._served.get(version, 0) + n
                for version, (n, agreed) in shadowed.items():
                    had = self._shadowed.get(version, (0, 0))
                    self._shadowed[version] = (had[0] + n, had[1] + agreed)
                self._chunks.extendleft(reversed(chunks))
                self._rows += sum(len(chunk) for chunk in chunks)
                while self._chunks and self._rows - len(self._chunks[0]) >= self.window:
                    self._rows -= len(self._chunks.popleft())
            raise

    def _shadow_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._shadow_batch()
            except Exception:
                log.exception("shadow: computing the queued rows failed")

    def _shadow_batch(self) -> None:
        """Compute every queued request with its shadow version; count the agreements."""
        with self._lock:
            queued, self._queue = self._queue, deque()
            self._queued = 0
        by_version: dict[str, list[tuple[Any, Any]]] = {}
        for shadow, rows, classes in queued:
            by_version.setdefault(shadow, []).append((rows, classes))
        for version, items in by_version.items():
            try:
                stored = self.registry.get(version)
            except (ModelStoreError, NotReadyError):
                continue  # deleted, or not loadable: a shadow never fails anything
            X = stack([rows for rows, _ in items])
            expected = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1)
                                       for _, c in items])  # fmt: skip
            agreed = int(np.count_nonzero(classes_of(stored, X) == expected))
            with self._lock:
                had = self._shadowed.get(version, (0, 0))
                self._shadowed[version] = (had[0] + len(expected), had[1] + agreed)

    # -- drift ------------------------------------------------------------------------------

    def reference(self, stored: StoredModel) -> dict[str, Any]:
        """The stable version's reference histogram: stored with it at training, or made now
        for a version stored before references were (from the shipped data when it was
        trained on them, else from its standardizer)."""
        found = self._references.get(stored.version)
        if found is None:
            meta = stored.metadata
            found = meta.get("input_reference")
            if not found:
                iris = load_iris()
                if meta.get("data_sha256") == iris.sha256():
                    found = input_reference(iris.raw, FEATURES)
                else:
                    found = normal_reference(stored.model.standardizer, FEATURES)
            self._references[stored.version] = found
        return found

    def drift(self) -> dict[str, Any]:
        """The window's PSI per feature against stable's reference (and the gauges set)."""
        stable = self.registry.get()
        reference = self.reference(stable)
        rows = self.store.window(self.window)
        enough = len(rows) >= min(self.window, MIN_DRIFT_ROWS)
        scores = feature_psi(reference, rows, FEATURES) if enough else {}
        features = {}
        for name in FEATURES:
            score = scores.get(name)
            features[name] = {"psi": score, "drifted": score is not None and score > self.threshold}
            metrics.DRIFT_PSI.labels(feature=name).set(score if score is not None else 0.0)
        return {
            "reference": stable.version,
            "reference_source": reference.get("source"),
            "window": self.window,
            "rows": len(rows),
            "threshold": self.threshold,
            "features": features,
        }


def stack(chunks: Sequence[Any]) -> FloatArray:
    """Rows of several requests (lists of rows or (n, 4) arrays) as one (n, 4) array."""
    return np.concatenate([np.asarray(chunk, dtype=np.float64).reshape(-1, 4) for chunk in chunks])


def classes_of(stored: StoredModel, raw: FloatArray) -> Any:
    """The class indices a version predicts for raw measurements (n, 4)."""
    model = stored.model
    return forward(model.params, model.standardizer.transform(raw)).o_s.argmax(axis=1)
