"""The inference core every front end calls: /predict, /gradients and /v2 infer.

A front end parses its wire format into measurements (n, 4) in centimetres and an optional
version, and writes its answer; everything between is here (MLServer's ``DataPlane`` is the
anchor): the row limit, the choice of model (the active one, or a stored version, never
loaded from disk on the event loop), running NumPy inline or in the thread pool by size, and
the prediction counters.

A body route is declared once, with :func:`hot_route`: the app's edge
(:mod:`service.edge`) answers it before FastAPI's routing, which would cost more than the
model on a one-row request, and the same handler serves FastAPI's route, which documents it
in OpenAPI and answers when the app runs without the edge.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import Response

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
from service.errors import ProblemError
from service.registry import Registry

# Bodies above this size are parsed and computed in the thread pool, so a large request
# never holds the event loop; small ones skip the thread hop.
INLINE_BODY_BYTES = 16 * 1024
BodyHandler = Callable[[Request, bytes], bytes]
ErrorAnswer = Callable[[Request, Exception], Response]
T = TypeVar("T")


class HotRoute(NamedTuple):
    """A body route the edge answers itself: its handler, and how its errors look."""

    handler: BodyHandler
    errors: ErrorAnswer


HOT_ROUTES: dict[tuple[str, str], HotRoute] = {}


def hot_route(
    router: APIRouter, path: str, handler: BodyHandler, errors: ErrorAnswer, **openapi: Any
) -> None:
    """Declare ``POST path`` once: for the edge (HOT_ROUTES) and as ``router``'s route.

    The route's endpoint runs the same handler, with the same inline-or-pool choice, so the
    OpenAPI document describes what the edge serves and an app without the edge serves it too.
    """
    HOT_ROUTES[("POST", path)] = HotRoute(handler, errors)

    async def answer(request: Request) -> Response:
        try:
            content = await run_sized(handler, request, await request.body())
        except Exception as error:
            return errors(request, error)
        return Response(content, media_type="application/json")

    router.add_api_route(path, endpoint_for(path, answer), methods=["POST"], **openapi)


def endpoint_for(
    path: str, call: Callable[[Request], Awaitable[Response]]
) -> Callable[..., Awaitable[Response]]:
    """An endpoint running ``call(request)`` that declares ``path``'s parameters (strings) to
    FastAPI, for its OpenAPI document; ``call`` reads them from ``request.path_params``. One
    handler can so serve several paths (a versioned and an unversioned one)."""

    async def endpoint(request: Request, **_: str) -> Response:
        return await call(request)

    request = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
    )
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
        for name in re.findall(r"{(\w+)}", path)
    ]
    endpoint.__signature__ = inspect.Signature([request, *params])  # type: ignore[attr-defined]
    endpoint.__name__ = getattr(call, "__name__", "endpoint")
    return endpoint


async def run_sized(handler: BodyHandler, request: Request, body: bytes) -> bytes:
    """Run a body handler inline for a small plain body, in the compute pool otherwise (a
    compressed body may inflate to many times its size; a pinned version may need loading
    from disk: the inline run gives way to the pool when it does)."""
    if len(body) > INLINE_BODY_BYTES:
        return await in_pool(handler, request, body)
    for name, _ in request.scope["headers"]:
        if name == b"content-encoding":
            return await in_pool(handler, request, body)
    token = _inline.set(True)
    try:
        return handler(request, body)
    except NotLoadedError:
        pass
    finally:
        _inline.reset(token)
    return await in_pool(handler, request, body)


# The threads that run large requests: the event loop's own executor, without the task
# groups, cancel scopes and capacity limiter of anyio's to_thread (which cost a 10,000-row
# request about 0.2 ms), and as many threads as NumPy can keep busy.
_pool = ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 2, thread_name_prefix="iris-compute")


def in_pool(handler: BodyHandler, request: Request, body: bytes) -> asyncio.Future[bytes]:
    return asyncio.get_running_loop().run_in_executor(_pool, handler, request, body)


def in_compute_pool(call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``call(*args)`` in the compute pool: for a route whose NumPy work grows with a stored
    version's width (decision regions, evaluation), so that at most as many run at once as
    the pool has threads, not one per thread of anyio's default pool (40)."""
    return asyncio.get_running_loop().run_in_executor(_pool, call, *args)


_inline: ContextVar[bool] = ContextVar("inline", default=False)


class NotLoadedError(Exception):
    """A handler running on the event loop needs a version loaded from disk."""


def served_model(registry: Registry, version: str | None) -> StoredModel:
    """The model to answer with; never loaded from disk on the event loop."""
    stored = registry.cached(version)
    if stored is None:
        if _inline.get():
            raise NotLoadedError
        stored = registry.get(version)
    return stored


def check_rows(n: int, limit: int, field: str = "instances") -> None:
    if n > limit:
        raise ProblemError(
            422, f"{field}: {n} rows, more than the limit of {limit} (IRIS_MAX_INSTANCES)"
        )


def predict(
    registry: Registry, raw: FloatArray, version: str | None
) -> tuple[str, FloatArray, IntArray]:
    """For raw measurements in cm (n, 4): the version that answers, its probabilities o_s
    (n, 3) and the predicted class indices (n,), counted in the metrics."""
    stored = served_model(registry, version)
    model = stored.model
    o_s = forward(model.params, model.standardizer.transform(raw)).o_s
    index = o_s.argmax(axis=1)
    metrics.count_predictions(index)
    return stored.version, o_s, index


def predict_row(
    registry: Registry, row: Sequence[float], version: str | None
) -> tuple[str, list[float], int]:
    """:func:`predict` of one row of raw measurements in cm (4,): the version that answers,
    its probabilities (3,) as Python floats (the same bits) and the predicted class index."""
    stored = served_model(registry, version)
    o_s = predict_one(stored.model, row)
    p0, p1, p2 = o_s
    k = 0 if p0 >= p1 and p0 >= p2 else 1 if p1 >= p2 else 2  # the first maximum, as argmax
    metrics.count_prediction(k)
    return stored.version, o_s, k


def gradients(
    stored: StoredModel, raw: FloatArray, y: IntArray, reduction: Reduction
) -> tuple[Cache, FloatArray, Gradients]:
    """The forward pass, the loss and every gradient of the derivation, for ``stored``."""
    model = stored.model
    cache = forward(model.params, model.standardizer.transform(raw))
    value = cross_entropy(cache, y, reduction)
    return cache, value, backward(model.params, cache, y, reduction)
