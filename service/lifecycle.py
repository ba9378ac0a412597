"""A worker's life: its state built at start, the current model followed, its parent watched.

:func:`build_state` makes what every route reads (token, stores, registry, launcher);
:func:`follow_current` keeps the served model current and a not-ready worker trying;
:func:`watch_parent` ends a worker whose supervisor is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from typing import Any

from fastapi.concurrency import run_in_threadpool

from model.errors import ModelStoreError
from service import errors, metrics
from service.config import Settings
from service.deps import State, resolve_token
from service.inference import Inference
from service.job_store import JobError
from service.launcher import Launcher
from service.registry import Registry, ensure_default_model
from service.rollout.store import RolloutStore
from service.rollout.traffic import Traffic
from service.stores import Backend, open_backend
from service.tuning import tune_process

log = logging.getLogger("iris.service")
PARENT_CHECK_SECONDS = 0.5


def watch_parent(interval: float = PARENT_CHECK_SECONDS) -> threading.Event | None:
    """In a worker spawned by the multi-worker supervisor, SIGTERM ourselves once it is gone.

    After a ``kill -9`` of the supervisor its workers are re-parented (to PID 1 or a
    subreaper) and would keep serving and holding the port. The SIGTERM takes the graceful
    path: in-flight requests finish, training children are stopped. Returns the event that
    stops the watch, or None in a single-process server (nothing to watch).
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    parent_pid = parent.pid
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                log.error(
                    "the server's main process %d is gone: this worker shuts down", parent_pid
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
    return stop


def build_state(settings: Settings) -> State:
    """Everything a worker needs before it serves: token, stores, default model, registry.

    With PostgreSQL down nothing here waits or fails: the worker starts not ready and
    :func:`follow_current` keeps trying (a replica never crash-loops on its database).
    """
    tune_process(settings.blas_threads)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets and jobs
    errors.hide_paths(settings.data_dir)
    token = resolve_token(settings)
    url = settings.database_url.get_secret_value() if settings.database_url else None
    backend = open_backend(settings.data_dir, url, settings.job_heartbeat_timeout)
    registry = Registry(backend.models)
    prepare(backend, registry, settings.seed)
    launcher = Launcher(
        backend.jobs,
        backend.child_args,
        on_finish=lambda job: record_job(job, backend.rollout),
        blas_threads=settings.blas_threads,
        max_training_seconds=settings.max_training_seconds,
        child_env=backend.child_env,
    )
    assert backend.rollout is not None
    traffic = Traffic(
        backend.rollout,
        registry,
        window=settings.drift_window,
        flush_seconds=settings.monitor_flush_seconds,
        threshold=settings.drift_psi_threshold,
    )
    inference = Inference(registry, settings.max_instances, settings.max_answer_values, traffic)
    state = State(settings, backend, registry, launcher, token, inference, traffic)
    follow_routing(state)
    return state


def follow_routing(state: State) -> None:
    """The rollout's tables, and the routing plan applied (tried again by the flusher)."""
    try:
        state.traffic.prepare()
    except ModelStoreError as error:
        log.error("routing is unavailable: %s", error)


def prepare(backend: Backend, registry: Registry, seed: int) -> None:
    """Schema, default model and the first load; what fails is logged and tried again later."""
    try:
        schema = backend.jobs.initialize()
        backend.jobs.reap()
        if backend.shared:
            backend.schema_version = schema
            log.info("database %s at schema version %s", backend.where, schema)
    except JobError as error:
        log.error("training is unavailable: %s", error)
    try:
        ensure_default_model(backend.models, seed)
    except ModelStoreError as error:
        log.error("no default model yet: %s", error)
    registry.refresh()


def record_job(job: dict[str, Any], rollout: RolloutStore | None = None) -> None:
    """A finished job in the metrics, and its activation in the routing's history."""
    metrics.JOBS.labels(outcome=job["status"]).inc()
    seconds = (job.get("metrics") or {}).get("training_seconds")
    if seconds is not None:
        metrics.JOB_DURATION.observe(seconds)
    version = job.get("model_version")
    if rollout is not None and job.get("activated") and version:
        reason = f"{version} activated by training job {job['job_id']}"
        try:
            rollout.record("activated", reason, version)
        except ModelStoreError as error:
            log.warning("the routing history misses an activation (%s): %s", reason, error)


async def follow_current(state: State) -> None:
    """Swap in the current version when it changes, and keep a not-ready worker trying.

    Files: CURRENT is read every IRIS_MODEL_POLL_SECONDS, its few bytes on the event loop;
    only a change takes the thread hop to load (a busy thread pool would otherwise delay
    every check). PostgreSQL: a notification from the replica that activated a version
    triggers the refresh at once (see the listener in the lifespan); the pointer is also
    read every second as the fallback for notifications lost with a connection, and jobs
    whose replica died are reaped. Pinned versions that another worker or replica deleted
    leave this worker's cache at the same pace (a look only when it holds any).
    """
    backend, registry = state.backend, state.registry
    interval = state.settings.model_poll_seconds
    every = max(1, round(1.0 / interval)) if backend.shared else 1
    tick = 0
    while True:
        await asyncio.sleep(interval)
        tick += 1
        try:
            if registry.active is None:
                await run_in_threadpool(prepare, backend, registry, state.settings.seed)
            elif tick % every == 0 and registry.needs_refresh():
                await run_in_threadpool(registry.refresh)
            if tick % every == 0 and registry.pinned():
                # Versions deleted by another worker or replica leave the pinned cache: for
                # the data directory a stat per pinned version (at most 64), on the event
                # loop as the CURRENT check is; for PostgreSQL a query, in a thread.
                if backend.shared:
                    await run_in_threadpool(registry.prune)
                else:
                    registry.prune()
            if backend.shared and tick % every == 0:
                await run_in_threadpool(reap_quietly, backend)
        except Exception:
            log.exception("checking the current model version failed")


def reap_quietly(backend: Backend) -> None:
    """Fail jobs whose replica stopped sending heartbeats (the database may be down)."""
    with contextlib.suppress(JobError):
        backend.jobs.reap()
