"""The FastAPI application: lifespan (model, jobs, token), middleware, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.errors import ModelStoreError
from service import dashboard, insights, metrics, problems, schemas, v2
from service.access_log import AccessLog
from service.config import Settings, get_settings
from service.deps import State, resolve_token
from service.jobs import JobError, Launcher
from service.lifecycle import watch_parent
from service.registry import Registry, ensure_default_model
from service.routes import HOT_ROUTES, HotRoute, json_response, router, run_sized
from service.stores import Backend, open_backend
from service.tuning import tune_process

log = logging.getLogger("iris.service")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_ROUTES = (
    ("/train", "post"),
    ("/train/{job_id}/cancel", "post"),
    ("/train/{job_id}", "delete"),
    ("/models/{version}/activate", "post"),
)


class BodyBudget:
    """Bytes of request bodies this worker holds, all requests together, and their limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


class EdgeMiddleware:
    """Body size limit, body deadline and body budget (before parsing, chunked bodies
    included) and metrics.

    The body is read here, within the limits, and replayed to the app, so an oversized,
    stalled or untimely request is answered (413, 408, 503) without the app ever seeing it.
    The budget bounds the bytes of all bodies being read or handled at once: a flood of
    large uploads gets 503 with Retry-After instead of the worker's memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float,
        max_buffered_bytes: int,
        hot_routes: Mapping[tuple[str, str], HotRoute] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.budget = BodyBudget(max_buffered_bytes)
        self.hot_routes = dict(hot_routes or {})
        # Routes with a path parameter ("/v2/models/iris/versions/{model_version}/infer"),
        # tried only when no exact path matched.
        self.hot_patterns = [
            (method, path_pattern(path), hot)
            for (method, path), hot in self.hot_routes.items()
            if "{" in path
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        route: str | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        held = [0]  # bytes of the budget this request holds, released when it ends
        try:
            method = scope["method"]
            if method not in BODY_METHODS:
                await self.app(scope, receive, send_with_status)
                return
            body = await self.buffered(scope, receive, send_with_status, held)
            if body is None:
                return  # answered here (413, 408, 503) or the client left
            hot = self.hot_routes.get((method, scope["path"])) or self.hot_pattern(method, scope)
            if hot is not None:
                route = scope["path"]
                await self.answer(scope, send_with_status, hot, body)
            else:
                await self.app(scope, replaying(body, receive), send_with_status)
        finally:
            self.budget.give(held[0])
            if route is None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)

    def hot_pattern(self, method: str, scope: Scope) -> HotRoute | None:
        for hot_method, pattern, hot in self.hot_patterns:
            if method == hot_method and pattern.match(scope["path"]):
                return hot
        return None

    async def answer(self, scope: Scope, send: Send, hot: HotRoute, body: bytes) -> None:
        """Run a hot route's handler and send its JSON (or the error it raised)."""
        request = Request(scope)
        try:
            content = await run_sized(hot.handler, request, body)
        except Exception as error:
            await hot.errors(request, error)(scope, _no_receive, send)
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def buffered(
        self, scope: Scope, receive: Receive, send: Send, held: list[int]
    ) -> bytes | None:
        """The whole body within the limits; None once this answered for the app.

        ``held[0]`` counts the budget taken: the declared length at once, else chunk by chunk.
        """
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared = int(value)
                if declared > limit:
                    await self.refuse(
                        scope, send, 413, self.too_large(f"Content-Length {declared}")
                    )
                    return None
                if not self.budget.take(declared):
                    await self.refuse_busy(scope, send)
                    return None
                held[0] = declared
        try:
            async with asyncio.timeout(self.body_timeout):
                return await self.read_body(receive, held)
        except TimeoutError:
            detail = (
                f"the request body did not arrive within {self.body_timeout:g} s "
                "(IRIS_BODY_TIMEOUT_SECONDS)"
            )
            await self.refuse(scope, send, 408, detail)
        except asyncio.CancelledError:  # shutdown's grace period ended while we waited
            await self.refuse(scope, send, 503, "the server shut down before the body arrived")
        except BodyTooLargeError:
            await self.refuse(scope, send, 413, self.too_large(f"more than {limit} bytes"))
        except OverBudgetError:
            await self.refuse_busy(scope, send)
        return None

    async def read_body(self, receive: Receive, held: list[int]) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLargeError
            if size > held[0]:  # a chunked body takes its budget as it comes
                if not self.budget.take(size - held[0]):
                    raise OverBudgetError
                held[0] = size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def refuse_busy(self, scope: Scope, send: Send) -> None:
        detail = (
            f"the server is holding as many request body bytes as it may "
            f"({self.budget.limit}, IRIS_MAX_BUFFERED_BYTES); retry shortly"
        )
        await self.refuse(scope, send, 503, detail, {"Retry-After": "1"})

    def too_large(self, what: str) -> str:
        return (
            f"request body too large: {what}; the limit is {self.max_body_bytes} bytes "
            "(IRIS_MAX_BODY_BYTES)"
        )

    async def refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        detail: str,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        """Answer for the app and close the connection; /v2 in the protocol's error shape."""
        headers = {"Connection": "close", **(extra_headers or {})}
        path = scope.get("path", "")
        if path == "/v2" or path.startswith("/v2/"):
            response = json_response({"error": detail}, status, headers)
        else:
            response = problems.problem(status, detail, path, headers=headers)
        await response(scope, _no_receive, send)


def path_pattern(path: str) -> re.Pattern[str]:
    """A route path with ``{parameters}`` as a regular expression of whole paths."""
    parts = re.split(r"(\{[^}/]+\})", path)
    return re.compile(
        "^" + "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts) + "$"
    )


class BodyTooLargeError(Exception):
    pass


class OverBudgetError(Exception):
    pass


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the connection's events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def build_state(settings: Settings) -> State:
    """Everything a worker needs before it serves: token, stores, default model, registry.

    With PostgreSQL down nothing here waits or fails: the worker starts not ready and
    :func:`follow_current` keeps trying (a replica never crash-loops on its database).
    """
    tune_process(settings.blas_threads)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # secrets and jobs
    problems.hide_paths(settings.data_dir)
    token = resolve_token(settings)
    url = settings.database_url.get_secret_value() if settings.database_url else None
    backend = open_backend(settings.data_dir, url, settings.job_heartbeat_timeout)
    registry = Registry(backend.models)
    prepare(backend, registry, settings.seed)
    launcher = Launcher(
        backend.jobs,
        backend.child_args,
        on_finish=record_job,
        blas_threads=settings.blas_threads,
        max_training_seconds=settings.max_training_seconds,
        child_env=backend.child_env,
    )
    return State(settings, backend, registry, launcher, token)


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


def record_job(job: dict[str, Any]) -> None:
    metrics.JOBS.labels(outcome=job["status"]).inc()
    seconds = (job.get("metrics") or {}).get("training_seconds")
    if seconds is not None:
        metrics.JOB_DURATION.observe(seconds)


async def follow_current(state: State) -> None:
    """Swap in the current version when it changes, and keep a not-ready worker trying.

    Files: CURRENT is read every IRIS_MODEL_POLL_SECONDS, its few bytes on the event loop;
    only a change takes the thread hop to load (a busy thread pool would otherwise delay
    every check). PostgreSQL: a notification from the replica that activated a version
    triggers the refresh at once (see the listener in the lifespan); the pointer is also
    read every second as the fallback for notifications lost with a connection, and jobs
    whose replica died are reaped.
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
            if backend.shared and tick % every == 0:
                await run_in_threadpool(reap_quietly, backend)
        except Exception:
            log.exception("checking the current model version failed")


def reap_quietly(backend: Backend) -> None:
    """Fail jobs whose replica stopped sending heartbeats (the database may be down)."""
    with contextlib.suppress(JobError):
        backend.jobs.reap()


def custom_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request bodies that routes parse themselves."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    bodies = (
        schemas.PredictRequest,
        schemas.GradientsRequest,
        schemas.TrainRequest,
        schemas.Problem,
    )
    for body in bodies:
        spec = body.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(spec.pop("$defs", {}))
        components[body.__name__] = spec
    for item in schema["paths"].values():
        for operation in item.values():
            responses = operation.get("responses", {})
            default = responses.get("422", {}).get("content", {}).get("application/json")
            if default and default["schema"].get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # FastAPI's default; this app answers problem documents
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(v2.REQUEST_SCHEMAS)
    for path in v2.INFER_PATHS:
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}
            },
        }
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, method in TOKEN_ROUTES:
        schema["paths"][path][method]["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await run_in_threadpool(build_state, settings)
        app.state.iris = state
        # Everything loaded so far lives as long as the worker: keep it out of the cyclic
        # collector's passes, which otherwise walk the whole heap during large requests.
        gc.collect()
        gc.freeze()
        follower = asyncio.create_task(follow_current(state))
        # The listener's thread loads a newly activated version itself (refresh is
        # thread-safe), so the swap waits for neither the poll nor the event loop.
        stop_listening = state.backend.listen(lambda version: state.registry.refresh())
        parent_watch = watch_parent()
        log.info(
            "ready: serving %s from %s",
            state.registry.active.version if state.registry.active else None,
            settings.data_dir,
        )
        try:
            yield
        finally:
            if parent_watch is not None:
                parent_watch.set()
            if stop_listening is not None:
                stop_listening()
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await run_in_threadpool(state.launcher.shutdown)
            state.backend.close()

    app = FastAPIOffline(
        title="Iris species service",
        version="1.0.0",
        description=(
            "A two-layer perceptron (4 -> hidden ReLU -> softmax over 3 species) in NumPy: "
            "predictions, training jobs, exact backpropagation gradients. Errors are RFC 9457 "
            "problem documents."
        ),
        lifespan=lifespan,
        # Prometheus metrics are ours; FastAPI's native OpenTelemetry hooks would cost a
        # check of the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(router)
    app.include_router(v2.router)
    app.include_router(insights.router)
    app.include_router(dashboard.router)
    problems.install(app, [*router.routes, *insights.router.routes, *dashboard.router.routes])
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout_seconds,
        max_buffered_bytes=settings.max_buffered_bytes,
        hot_routes=HOT_ROUTES | v2.HOT_ROUTES,
    )
    if settings.access_log:
        app.add_middleware(AccessLog)  # outermost: its duration covers the edge's work
    app.openapi = lambda: custom_openapi(app)  # type: ignore[method-assign]
    return app
