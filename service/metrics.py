"""Prometheus metrics. With several workers, prometheus-client's multiprocess mode is used
(``PROMETHEUS_MULTIPROC_DIR``, set by ``iris-serve`` before the workers start)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from model.data import CLASSES
from model.persistence import pid_alive

REQUESTS = Counter(
    "iris_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "iris_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PREDICTIONS = Counter("iris_predictions_total", "Predicted rows by class", ["label"])
PREDICTED = [PREDICTIONS.labels(label=label) for label in CLASSES]  # by class index


def count_prediction(k: int) -> None:
    """Count one predicted row of class index ``k``."""
    PREDICTED[k].inc()


def count_predictions(index: Any) -> None:
    """Count predicted rows by class, from their class indices (an integer array)."""
    for k, count in enumerate(np.bincount(index, minlength=len(CLASSES)).tolist()):
        if count:
            PREDICTED[k].inc(count)


JOBS = Counter(
    "iris_training_jobs_total", "Training jobs started or refused by outcome", ["outcome"]
)
JOB_DURATION = Histogram(
    "iris_training_job_duration_seconds",
    "Training time of finished jobs",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
ACTIVE_MODEL = Gauge(
    "iris_active_model_info",
    "1 for the model version a worker serves",
    ["version"],
    multiprocess_mode="liveall",
)

DRIFT_PSI = Gauge(
    "iris_drift_psi",
    "Population stability index of the recent input rows against the stable version's "
    "training data, by feature (0 while the window holds too few rows)",
    ["feature"],
    multiprocess_mode="livemostrecent",
)
SHADOW_DROPPED = Counter(
    "iris_shadow_dropped_rows_total",
    "Rows not computed by the shadow version because its queue was full",
)


# Label values come from closed sets, so no client can add series: a method outside these is
# "other" (methods are case-sensitive: "get" is one), a path that matched no route is
# "unmatched" (the edge's label: routes are the app's templates), and a status is one the
# server itself answered.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"

_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def method_label(method: str) -> str:
    return method if method in METHODS else OTHER_METHOD


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count a request and its latency (the labelled children are looked up once)."""
    key = (route, method_label(method), status)
    children = _request_children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(key[0], key[1], str(status)),
            LATENCY.labels(key[0], key[1]),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def set_active_model(version: str | None, previous: str | None) -> None:
    if previous is not None and previous != version:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            ACTIVE_MODEL.labels(version=previous).set(0)  # multiprocess mode cannot remove
        else:
            ACTIVE_MODEL.remove(previous)
    if version is not None:
        ACTIVE_MODEL.labels(version=version).set(1)


def forget_dead_workers(directory: str) -> list[int]:
    """Drop the live gauges of worker processes that are gone (a ``kill -9`` runs no exit
    hook); returns their pids. Counters and histograms keep their files: totals stay."""
    dead = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        number = path.stem.rsplit("_", 1)[1]
        if number.isdigit() and not pid_alive(int(number)):
            dead.add(int(number))
    for pid in dead:
        prometheus_multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


def render() -> tuple[bytes, str]:
    """The exposition text (merged across workers in multiprocess mode) and its media type."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        forget_dead_workers(directory)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
