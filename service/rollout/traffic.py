"""One worker's side of the rollout: which version answers, and what it counts.

**Choosing.** A request that pins no version goes to the canary with probability ``weight``;
with an ``X-Routing-Key`` header, to the canary when the key's point
(:func:`~service.rollout.plan.key_point`) is below ``weight``, so a key always meets the
same version. The plan is one immutable object, replaced whole; without a canary the choice
is one attribute read. The versions a plan routes to are loaded when it is applied, and held
here, so a routed request never waits for a load.

**Counting without a write per request.** Each answer adds to this worker's tallies in memory
(rows served per version, the rows themselves for the drift window) under a lock held for a
few assignments; rows stable answered are queued for the shadow. Two daemon threads do the
rest off the requests' path:

- the **shadow** thread computes the queued rows with the shadow version in batches (every
  0.1 s, or at once past 1,000 rows) and counts how many classes agree with stable's; a full
  queue drops rows, counted in ``iris_shadow_dropped_rows_total``, and never blocks a request;
- the **flusher**, every ``IRIS_MONITOR_FLUSH_SECONDS`` (at most 1 s), reads the plan and
  applies it when it changed, adds the tallies to the store in one transaction (a failed
  flush keeps them for the next), judges the canary (the rule's backstop) and completes a
  pending promotion, and every 5 s recomputes the drift gauge. Each step fails on its own:
  a store that refuses writes still has its plan followed.

A worker killed outright loses what it counted since its last flush that succeeded (one flush
interval while the store is up) and its shadow queue; never a plan change or a decision,
which are written before they are applied.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from model.data import FEATURES, load_iris
from model.errors import ModelStoreError
from model.network import FloatArray, forward
from model.persistence import StoredModel
from model.reference import feature_psi, input_reference
from service import metrics
from service.registry import NotReadyError, Registry
from service.rollout import rule
from service.rollout.plan import Plan, key_point
from service.rollout.store import FEATURE_COUNT, RolloutStore

log = logging.getLogger("iris.rollout")
ROUTING_HEADER = "x-routing-key"
_ROUTING_HEADER = ROUTING_HEADER.encode()
SHADOW_QUEUE_ROWS = 20_000  # rows waiting for the shadow; more are dropped, and counted
SHADOW_BATCH_ROWS = 1000  # the shadow thread is woken at once past this many queued rows
SHADOW_WAIT_SECONDS = 0.1  # and otherwise computes what is queued this often
DRIFT_EVERY_SECONDS = 5.0  # how often the flusher recomputes the drift gauge
MIN_DRIFT_ROWS = 300  # fewer rows in the window (or the whole window, if smaller): no PSI


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
        self.plan = Plan()  # replaced whole, never changed: a reader reads it once
        self.loaded: dict[str, StoredModel] = {}  # the versions the plan routes to
        self.ready = False
        self._plan_lock = threading.Lock()
        # Held by a feedback request from its labels to its judgement, and by the flusher's
        # backstop: this worker's backstop never takes the decision from the request whose
        # labels completed the count (that request reports it).
        self.deciding = threading.Lock()
        self._lock = threading.Lock()
        self._served: dict[str, int] = {}
        # Recent input rows: one-row requests' numbers, and many-row requests' rows in
        # request order (the window's rows are the newest of both at each flush).
        self._singles = array("d")
        self._chunks: deque[Any] = deque()
        self._rows = 0
        self._queue: deque[tuple[str, Any, Any]] = deque()  # (shadow, rows, stable's classes)
        self._queued = 0
        self._shadowed: dict[str, tuple[int, int]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._references: dict[str, dict[str, Any] | None] = {}
        self._failing: dict[str, str] = {}

    # -- on the request's path --------------------------------------------------------------

    def choose(self, headers: Iterable[tuple[Any, Any]] | None) -> str | None:
        """The version a request that pins none goes to: the canary's, or None (stable)."""
        canary = self.plan.canary
        if canary is None:
            return None
        key = routing_key(headers)
        point = random.random() if key is None else key_point(key)
        return canary.version if point < canary.weight else None

    def served(self, version: str, rows: Sequence[Any] | FloatArray, classes: Any) -> None:
        """Count the rows ``version`` answered; keep them for the drift window, and queue
        them for the shadow when stable answered them (``classes``: its class indices)."""
        n = len(rows)
        wake = False
        with self._lock:
            self._served[version] = self._served.get(version, 0) + n
            if n == 1:  # its four numbers, no object kept for the collector to walk
                self._singles.extend(rows[0])
                if len(self._singles) >= 2 * FEATURE_COUNT * self.window:
                    del self._singles[: -FEATURE_COUNT * self.window]
            else:
                self._chunks.append(rows)
                self._rows += n
                while self._rows - len(self._chunks[0]) >= self.window:
                    self._rows -= len(self._chunks.popleft())
            shadow = self.plan.shadow
            if shadow is not None and self.by_stable(version):
                if self._queued + n <= SHADOW_QUEUE_ROWS:
                    self._queue.append((shadow.version, rows, classes))
                    self._queued += n
                    wake = self._queued >= SHADOW_BATCH_ROWS
                else:
                    metrics.SHADOW_DROPPED.inc(n)
        if wake:
            self._wake.set()

    def by_stable(self, version: str) -> bool:
        active = self.registry.active
        return active is not None and active.version == version

    # -- the plan ---------------------------------------------------------------------------

    def apply(self, plan: Plan) -> None:
        """Route by ``plan`` from now on, unless this worker already routes by a newer one.
        The versions it routes to are loaded first (one that cannot be loaded sends its
        share to stable)."""
        with self._plan_lock:
            if plan.revision < self.plan.revision:
                return
            loaded = {}
            for version in plan.versions():
                stored = self.loaded.get(version)
                try:
                    loaded[version] = stored or self.registry.get(version)
                except ModelStoreError as error:
                    if version not in self.plan.versions():  # said once, not at every retry
                        log.warning("routing names version %s, which cannot be loaded: %s",
                                    version, error)  # fmt: skip
            self.loaded = loaded
            self.plan = plan

    def prepare(self) -> None:
        """The store's tables made, and the plan applied (the flusher retries until done)."""
        self.store.initialize()
        self.reload()
        self.ready = True

    def reload(self) -> Plan:
        """Read the plan from the store and apply it if it changed, or if a version it routes
        to could not be loaded last time (a file being written, a store briefly down)."""
        plan = self.store.plan()
        loaded = self.loaded
        if plan.revision != self.plan.revision or any(v not in loaded for v in plan.versions()):
            self.apply(plan)
        return plan

    # -- threads ----------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._flush_loop, "iris-flush"), (self._shadow_loop, "iris-shadow")):
            thread = threading.Thread(target=target, daemon=True, name=name)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads; the shadow's last batch and one last flush are written (a store
        that is down then loses them, as a crash would, and the stop goes on)."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._step("shadow", self._shadow_batch)
        self._step("flush", self.flush)

    def _flush_loop(self) -> None:
        drift_at = 0.0
        while not self._stopping.wait(self.flush_seconds):
            if not self.ready and not self._step("prepare", self.prepare):
                continue
            self._step("reload", self.reload)
            self._step("flush", self.flush)
            self._step("rule", self.judge)
            if time.monotonic() >= drift_at:
                drift_at = time.monotonic() + DRIFT_EVERY_SECONDS
                self._step("drift", self.drift)

    def _step(self, name: str, work: Callable[[], object]) -> bool:
        """Run one step of the flusher; its failure is logged once while it lasts."""
        try:
            work()
        except (ModelStoreError, NotReadyError) as error:
            if self._failing.get(name) != str(error):
                self._failing[name] = str(error)
                log.warning("monitoring (%s): %s; tried again at the next flush", name, error)
            return False
        except Exception as error:
            if self._failing.get(name) != repr(error):
                self._failing[name] = repr(error)
                log.exception("monitoring (%s) failed; tried again at the next flush", name)
            return False
        self._failing.pop(name, None)
        return True

    def judge(self) -> None:
        """The rule's backstop, and a pending promotion completed."""
        plan = self.plan
        if plan.canary is not None and plan.canary.promote_after is not None:
            with self.deciding:
                rule.decide(self.store, self.registry, self)
        if plan.promoting is not None:  # this worker's plan, read by the reload just before
            rule.complete_promotion(self.store, self.registry, self)

    def flush(self) -> None:
        """Add this worker's tallies to the store; on failure they wait for the next."""
        with self._lock:
            served, self._served = self._served, {}
            shadowed, self._shadowed = self._shadowed, {}
            chunks = list(self._chunks)
            if self._singles:
                chunks.append(np.frombuffer(self._singles.tobytes()).reshape(-1, FEATURE_COUNT))
                self._singles = array("d")
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
            # Without a shadow nothing is queued: a long wait (a plan with one is at most a
            # second late in being computed, never dropped).
            self._wake.wait(SHADOW_WAIT_SECONDS if self.plan.shadow else 1.0)
            self._wake.clear()
            if self._queued:
                self._step("shadow", self._shadow_batch)

    def _shadow_batch(self) -> None:
        """Compute every queued request with its shadow version; count the agreements."""
        with self._lock:
            queued, self._queue = self._queue, deque()
            self._queued = 0
        by_version: dict[str, list[tuple[Any, Any]]] = {}
        for shadow, rows, classes in queued:
            by_version.setdefault(shadow, []).append((rows, classes))
        for version, items in by_version.items():
            stored = self.loaded.get(version)
            if stored is None:
                continue  # not loadable when the plan was applied: a shadow fails nothing
            X = stack([rows for rows, _ in items])
            expected = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1)
                                       for _, c in items])  # fmt: skip
            agreed = int(np.count_nonzero(classes_of(stored, X) == expected))
            with self._lock:
                had = self._shadowed.get(version, (0, 0))
                self._shadowed[version] = (had[0] + len(expected), had[1] + agreed)

    # -- drift ------------------------------------------------------------------------------

    def reference(self, stored: StoredModel) -> dict[str, Any] | None:
        """The stable version's reference histogram: stored with it at training, or, for a
        version stored before references were, made now from the shipped data when it was
        trained on them; None when its training rows are not known."""
        if stored.version not in self._references:
            meta = stored.metadata
            found = meta.get("input_reference") or None
            if found is None and trained_on_iris(meta):
                found = input_reference(load_iris().raw, FEATURES)
            self._references[stored.version] = found
        return self._references[stored.version]

    def drift(self) -> dict[str, Any]:
        """The window's PSI per feature against stable's reference (and the gauges set)."""
        stable = self.registry.get()
        reference = self.reference(stable)
        rows = self.store.window(self.window)
        enough = reference is not None and len(rows) >= min(self.window, MIN_DRIFT_ROWS)
        scores = feature_psi(reference, rows, FEATURES) if reference and enough else {}
        features = {}
        for name in FEATURES:
            score = scores.get(name)
            features[name] = {"psi": score, "drifted": score is not None and score > self.threshold}
            metrics.DRIFT_PSI.labels(feature=name).set(score if score is not None else 0.0)
        return {
            "reference": stable.version,
            "reference_source": reference.get("source") if reference else None,
            "window": self.window,
            "rows": len(rows),
            "threshold": self.threshold,
            "features": features,
        }


def trained_on_iris(meta: dict[str, Any]) -> bool:
    """A version's metadata says it was trained on the shipped Iris data."""
    data = meta.get("data") or {}
    if meta.get("data_sha256") is not None:
        return bool(meta["data_sha256"] == load_iris().sha256())
    return isinstance(data, dict) and data.get("source") == "iris"


def stack(chunks: Sequence[Any]) -> FloatArray:
    """Rows of several requests (lists of rows or (n, 4) arrays) as one (n, 4) array."""
    return np.concatenate([np.asarray(chunk, dtype=np.float64).reshape(-1, 4) for chunk in chunks])


def classes_of(stored: StoredModel, raw: FloatArray) -> Any:
    """The class indices a version predicts for raw measurements (n, 4)."""
    model = stored.model
    return forward(model.params, model.standardizer.transform(raw)).o_s.argmax(axis=1)
