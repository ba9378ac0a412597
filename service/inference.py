"""The inference core every front end calls: /predict, /gradients and /v2 infer.

A front end decodes its wire format into rows of measurements in centimetres (n, 4) and an
optional version (service/native.py, service/v2/decode.py), calls :class:`Inference`, and
encodes what it returns; everything between is here (MLServer's ``DataPlane`` is the
anchor): the row limit (:func:`check_rows`, one place, one message), the choice of model
(the active one, or a stored version, never loaded from disk on the event loop), the
one-row or many-row computation, the bound on a /gradients answer, and the prediction
counters. Its compute pool (:func:`in_compute_pool`) bounds how many large requests run at
once; a handler that runs on the event loop never loads a version from disk
(:class:`NotLoadedError`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

import numpy as np

from model.network import (
    Cache,
    FloatArray,
    Gradients,
    IntArray,
    Reduction,
    backward,
    forward,
    predict_one,
)
from model.network import loss as cross_entropy
from model.persistence import StoredModel
from service import metrics
from service.body import Rows
from service.errors import ProblemError
from service.registry import Registry
from service.rollout.traffic import Traffic

Headers = Iterable[tuple[Any, Any]] | None
"""A request's raw headers (ASGI's or gRPC metadata's), read only for an X-Routing-Key."""

T = TypeVar("T")


def check_rows(n: int, limit: int) -> None:
    """The row limit, for every front end: the core checks it, and a decoder that learns n
    before reading the rows (a declared shape) may check it early with the same words."""
    if n > limit:
        raise ProblemError(422, f"{n} rows, more than the limit of {limit} (IRIS_MAX_INSTANCES)")


class OneRow(NamedTuple):
    """The prediction of one row: its probabilities o_s (3,) as Python floats (the bits
    :func:`~model.network.forward` gives) and the predicted class index."""

    version: str
    probabilities: list[float]
    k: int


class Batch(NamedTuple):
    """The predictions of n rows: probabilities o_s (n, 3) and class indices (n,)."""

    version: str
    o_s: FloatArray
    classes: IntArray


class Computed(NamedTuple):
    """A /gradients computation: the model, the forward pass, the loss, every gradient."""

    stored: StoredModel
    cache: Cache
    loss: FloatArray
    gradients: Gradients


class Inference:
    """The core: predictions and gradients of rows, by version, within the limits."""

    def __init__(
        self,
        registry: Registry,
        max_instances: int,
        max_answer_values: int,
        traffic: Traffic | None = None,
    ) -> None:
        self.registry = registry
        self.max_instances = max_instances
        self.max_answer_values = max_answer_values
        self.traffic = traffic

    def predict(self, rows: Rows, version: str | None, headers: Headers = None) -> OneRow | Batch:
        """The version that answers and its predictions for raw measurements (n, 4), counted
        in the metrics and the rollout's tallies. A request that pins no version goes where
        the routing sends it (``headers``, raw, may hold its X-Routing-Key). One row is
        computed with Python floats where the bits allow (:func:`~model.network.predict_one`:
        a third of the NumPy calls), many as arrays."""
        n = len(rows)
        check_rows(n, self.max_instances)
        stored = self.model_for(version, headers)
        traffic = self.traffic
        if n == 1:
            row = rows[0]
            probabilities = predict_one(
                stored.model, row.tolist() if type(row) is np.ndarray else row
            )
            p0, p1, p2 = probabilities
            k = 0 if p0 >= p1 and p0 >= p2 else 1 if p1 >= p2 else 2  # the first maximum
            metrics.count_prediction(k)
            if traffic is not None:
                traffic.served(stored.version, rows, k)
            return OneRow(stored.version, probabilities, k)
        model = stored.model
        raw = np.asarray(rows, dtype=np.float64)
        o_s = forward(model.params, model.standardizer.transform(raw)).o_s
        classes = o_s.argmax(axis=1)
        metrics.count_predictions(classes)
        if traffic is not None:
            traffic.served(stored.version, raw, classes)
        return Batch(stored.version, o_s, classes)

    def model_for(self, version: str | None, headers: Headers) -> StoredModel:
        """The model that answers: the pinned version, else stable, or the canary where the
        routing sends the request (read only while a canary is set)."""
        traffic = self.traffic
        if version is None and traffic is not None and traffic.plan.canary is not None:
            return self.routed(traffic, headers)
        return served_model(self.registry, version)

    def routed(self, traffic: Traffic, headers: Headers) -> StoredModel:
        """The model the routing sends a request that pins no version to, while a canary is
        set: one the plan loaded when it was applied, else stable (a canary that could not
        be loaded is tried again at the next flush; a routed request never fails for it, and
        never waits for a load)."""
        version = traffic.choose(headers)
        stored = None if version is None else traffic.loaded.get(version)
        return stored or served_model(self.registry, None)

    def gradients(
        self,
        rows: Rows,
        y: IntArray,
        version: str | None,
        reduction: Reduction,
        include: frozenset[str],
        *,
        headers: Headers = None,
    ) -> Computed:
        """The forward pass, the loss and every gradient of the derivation, for raw
        measurements (n, 4) and class indices y (n,); refused before any work when the
        answer would hold more than IRIS_MAX_ANSWER_VALUES numbers."""
        n = len(rows)
        check_rows(n, self.max_instances)
        stored = self.model_for(version, headers)
        model = stored.model
        check_answer_size(n, model.params.hidden_units, reduction, include, self.max_answer_values)
        raw = np.asarray(rows, dtype=np.float64)
        cache = forward(model.params, model.standardizer.transform(raw))
        value = cross_entropy(cache, y, reduction)
        if self.traffic is not None:  # counted, kept and shadowed as predictions are
            self.traffic.served(stored.version, raw, cache.o_s.argmax(axis=1))
        return Computed(stored, cache, value, backward(model.params, cache, y, reduction))


def answer_values(n: int, H: int, reduction: str, include: frozenset[str]) -> int:
    """How many numbers a /gradients answer holds, from its shapes alone."""
    per_sample = reduction == "none"
    count = (8 * H + 3) * (n if per_sample else 1)  # dW1, db1, dW2, db2 (per row for none)
    count += n if per_sample else 1  # the loss
    if "activations" in include:
        count += n * (4 + H + H + 3 + 3)  # x, h_a, h_s, o_a, o_s
    if "intermediates" in include:
        count += n * (3 + H + H)  # do_a, dh_s, dh_a
    if "input" in include:
        count += n * (4 + 4)  # dx, and in centimetres
    return count


def check_answer_size(n: int, H: int, reduction: str, include: frozenset[str], limit: int) -> None:
    """Refuse, before any work, a /gradients answer of more than ``limit`` numbers."""
    count = answer_values(n, H, reduction, include)
    if count > limit:
        raise ProblemError(
            422,
            f"the answer would hold {count} numbers ({n} instances, {H} hidden units, "
            f"reduction {reduction!r}, include {sorted(include)}), more than the limit of "
            f"{limit} (IRIS_MAX_ANSWER_VALUES): send fewer instances, use reduction 'mean' "
            "or 'sum' instead of 'none', or include fewer parts",
        )


# The threads that run large requests: the event loop's own executor, without the task
# groups, cancel scopes and capacity limiter of anyio's to_thread (which cost a 10,000-row
# request about 0.2 ms), and as many threads as NumPy can keep busy.
_pool = ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 2, thread_name_prefix="iris-compute")


def in_compute_pool(call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``call(*args)`` in the compute pool: for a request whose NumPy work grows with its
    rows or a stored version's width (decision regions, evaluation), so that at most as many
    run at once as the pool has threads, not one per thread of anyio's default pool (40)."""
    return asyncio.get_running_loop().run_in_executor(_pool, call, *args)


INLINE_BYTES = 16 * 1024
"""A request body or gRPC message up to this size is decoded and answered on the event loop
(no thread hop); a larger one in the compute pool, so it never holds the loop."""

ON_EVENT_LOOP: ContextVar[bool] = ContextVar("on_event_loop", default=False)
"""Set while a handler runs on the event loop: :func:`served_model` then loads nothing from
disk (it raises :class:`NotLoadedError`, for the caller to move the work to the pool)."""


class NotLoadedError(Exception):
    """A handler running on the event loop needs a version loaded from disk."""


def served_model(registry: Registry, version: str | None) -> StoredModel:
    """The model to answer with; never loaded from disk on the event loop."""
    stored = registry.cached(version)
    if stored is None:
        if ON_EVENT_LOOP.get():
            raise NotLoadedError
        stored = registry.get(version)
    return stored
