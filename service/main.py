"""The FastAPI application: its routers, the hot routes' table, the edge and the lifespan.

Where a request goes: service/server.py (the HTTP protocol and its bounds) -> the edge,
service/edge/ (request metrics; admission and body limits; the hot routes of
:data:`HOT_ROUTES`, answered before routing) -> FastAPI's routers (service/routers/,
service/v2/, service/insights.py, service/dashboard.py) for everything else. Whatever runs
the model goes through service/inference.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp

from model.errors import ModelStoreError
from service import dashboard, insights, problems, v2
from service.access_log import AccessLog
from service.admission import Admission
from service.config import Settings, get_settings
from service.edge import HotRouteDispatch, Limits, RequestMetrics
from service.lifecycle import build_state, follow_current, watch_parent
from service.openapi import custom_openapi
from service.rollout.plan import ROUTING_CHANGED
from service.routers import gradients, health, models, predict, rollout, train
from service.routing import HotRoutes

if TYPE_CHECKING:
    from service.deps import State
    from service.rpc.server import GrpcServer

log = logging.getLogger("iris.service")
NATIVE_ROUTERS = (train.router, models.router, rollout.router, health.router)
HOT_ROUTES = HotRoutes([predict.ROUTE, gradients.ROUTE, *v2.INFER_ROUTES])
"""The body routes the edge answers before FastAPI: the one table of them."""


def edge(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The edge's layers around ``app``, outermost last (service/edge/)."""
    stack: ASGIApp = HotRouteDispatch(app, HOT_ROUTES)
    stack = Limits(
        stack,
        max_body_bytes=settings.max_body_bytes,
        max_buffered_bytes=settings.max_buffered_bytes,
        admission=Admission(
            settings.max_connections,
            settings.max_event_streams,
            settings.max_event_streams_per_job,
        ),
    )
    stack = RequestMetrics(stack)
    if settings.access_log:
        stack = AccessLog(stack)  # outermost: its duration covers the edge's work
    return stack


# How long gRPC calls in flight may take to finish once HTTP has drained and the worker stops.
GRPC_GRACE_SECONDS = 1.0


async def start_grpc(state: State, settings: Settings) -> GrpcServer | None:
    """The worker's gRPC server on IRIS_GRPC_PORT (None when it is 0). Imported only then:
    its generated messages would clash with a client's of the same protocol in one process."""
    if settings.grpc_port == 0:
        return None
    from service.rpc.server import GrpcServer

    server = GrpcServer(state, settings.host, settings.grpc_port, shared_port=settings.workers > 1)
    await server.start()
    return server


def notified(state: State, what: str | None) -> None:
    """A notification from any replica: a version was activated, the routing changed, or
    (None) the listener reconnected and either may have."""
    if what != ROUTING_CHANGED:
        state.registry.refresh()
    if what is None or what == ROUTING_CHANGED:
        # A store that is down again at once: the flusher reads the plan within a second.
        with contextlib.suppress(ModelStoreError):
            state.traffic.reload()


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
        # thread-safe), so the swap waits for neither the poll nor the event loop; a routing
        # change is applied the same way.
        stop_listening = state.backend.listen(lambda what: notified(state, what))
        state.traffic.start()
        parent_watch = watch_parent()
        rpc = await start_grpc(state, settings)
        log.info(
            "ready: serving %s from %s",
            state.registry.active.version if state.registry.active else None,
            settings.data_dir,
        )
        try:
            yield
        finally:
            if rpc is not None:
                await rpc.stop(GRPC_GRACE_SECONDS)
            if parent_watch is not None:
                parent_watch.set()
            if stop_listening is not None:
                stop_listening()
            await run_in_threadpool(state.traffic.stop)  # the last counts are flushed
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
        # One spelling per path: /predict/ is a 404 naming it, never a 307 whose Location
        # Starlette would build from the client's Host header.
        redirect_slashes=False,
    )
    for router in NATIVE_ROUTERS:
        app.include_router(router)
    app.include_router(v2.router)
    app.include_router(insights.router)
    app.include_router(dashboard.router)
    native = [
        route for r in (*NATIVE_ROUTERS, insights.router, dashboard.router) for route in r.routes
    ]
    problems.install(app, native)
    # The edge around FastAPI's middleware stack, not inside it: that stack (server errors,
    # exception handlers, routing) costs more than the model on a one-row request, and the
    # edge answers the hot routes before it. Starlette builds the stack on the first
    # request when none is set; it is built here instead, once, with every route in place.
    app.middleware_stack = edge(app.build_middleware_stack(), settings)
    app.openapi = lambda: custom_openapi(app, HOT_ROUTES)  # type: ignore[method-assign]
    return app
