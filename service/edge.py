"""The app's edge: what every request passes first, and the body routes it answers.

An ASGI middleware, the outermost layer of the app (service.main puts it outside FastAPI's
own middleware), with four jobs, in order:

1. **Admission** (service/admission.py): a request past IRIS_MAX_CONNECTIONS requests in
   progress is 503 with Retry-After.
2. **Body limits**, before anything is parsed: a declared length over IRIS_MAX_BODY_BYTES is
   413 at once; a body (chunked too) that grows past it is 413; a shutdown while waiting is
   503. (A body that does not arrive within IRIS_BODY_TIMEOUT_SECONDS, or comes slower than
   IRIS_BODY_MIN_RATE, is the protocol's to refuse, service/server.py, with
   :func:`late_body`'s answer.) Then a **body budget** across requests
   (IRIS_MAX_BUFFERED_BYTES per worker), taken as bytes arrive, with a reserve only small
   bodies may take: a flood of large uploads gets 503 with Retry-After instead of the
   worker's memory, and never a small body's place.
3. **The hot routes** (service.inference.HOT_ROUTES: /predict, /gradients, /v2 infer): their
   handlers run here, with the body already read, before FastAPI's middleware, routing,
   dependency resolution and exception handlers, which cost more than the model on a one-row
   request (docs/performance.md). Everything else is replayed to the app.
4. **Metrics**: requests by route, method and status, with their latency.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.admission import RETRY, SMALL_BODY_BYTES, Admission, BodyBudget, BodyHold
from service.errors import problem
from service.inference import HotRoute, run_sized
from service.responses import json_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MATCHED_PATHS = 64  # paths with parameters remembered by the edge, the first that match


class EdgeMiddleware:
    """Admission, body size limit and body budget (before parsing, chunked bodies
    included), the hot routes, and metrics.

    The body is read here, within the limits, and replayed to the app, so an oversized or
    untimely request is answered (413, 503) without the app ever seeing it.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_buffered_bytes: int,
        application: object,
        admission: Admission,
        hot_routes: Mapping[tuple[str, str], HotRoute] | None = None,
    ) -> None:
        self.app = app
        # The FastAPI application, for scope["app"] when the edge is called directly.
        self.application = application
        self.max_body_bytes = max_body_bytes
        self.budget = BodyBudget(max_buffered_bytes)
        self.admission = admission
        self.hot_routes = dict(hot_routes or {})
        # Routes with a path parameter ("/v2/models/iris/versions/{model_version}/infer"),
        # tried only when no exact path matched.
        self.hot_patterns = [
            (method, path_pattern(path), hot, path)
            for (method, path), hot in self.hot_routes.items()
            if "{" in path
        ]
        self.matched: dict[tuple[str, str], tuple[HotRoute, str, dict[str, str]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.application
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]  # the answer's status, for the metrics
        route: str | None = None
        admission = self.admission
        if not admission.enter():
            status[0] = await self.refuse(scope, send, 503, admission.busy_detail(), RETRY)
            metrics.observe_request("unmatched", scope["method"], status[0], 0.0)
            return
        scope[Admission.SCOPE_KEY] = admission
        held: BodyHold | None = None  # the bytes of a body, given back when the request ends
        try:
            method = scope["method"]
            if method not in BODY_METHODS:
                await self.forward(scope, receive, send, status)
                return
            held = self.budget.hold()
            body = await self.buffered(scope, receive, send, held)
            if isinstance(body, int):
                status[0] = body  # answered here (413, 503), or 0: the client left
                return
            hot = self.hot_routes.get((method, scope["path"]))
            route = scope["path"] if hot is not None else None
            if hot is None:
                hot, route = self.hot_pattern(method, scope)
            if hot is not None:
                status[0] = await self.answer(scope, send, hot, body)
            else:
                await self.forward(scope, replaying(body, receive), send, status)
        finally:
            if held is not None:
                held.release()
            admission.leave()
            if route is None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            metrics.observe_request(route, scope["method"], status[0], seconds)

    async def forward(self, scope: Scope, receive: Receive, send: Send, status: list[int]) -> None:
        """Hand the request to the app; ``status[0]`` follows the status it answers."""

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, send_with_status)

    def hot_pattern(self, method: str, scope: Scope) -> tuple[HotRoute | None, str | None]:
        """The hot route whose path has parameters and matches; they go into the scope's
        ``path_params``, as routing would put them. Paths that matched are remembered (a
        few: clients choose paths), so a busy one is one lookup."""
        key = (method, scope["path"])
        known = self.matched.get(key)
        if known is not None:
            hot, template, params = known
            scope["path_params"] = dict(params)
            return hot, template
        for hot_method, pattern, hot, template in self.hot_patterns:
            found = pattern.match(scope["path"]) if method == hot_method else None
            if found is not None:
                scope["path_params"] = found.groupdict()
                if len(self.matched) < MATCHED_PATHS:
                    self.matched[key] = (hot, template, found.groupdict())
                return hot, template  # the template names the route in the metrics
        return None, None

    async def answer(self, scope: Scope, send: Send, hot: HotRoute, body: bytes) -> int:
        """Run a hot route's handler and send its JSON (or the error it raised); the status."""
        request = Request(scope)
        try:
            content = await run_sized(hot.handler, request, body)
        except Exception as error:
            response = hot.errors(request, error)
            await response(scope, _no_receive, send)
            return response.status_code
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(content)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        return 200

    async def buffered(
        self, scope: Scope, receive: Receive, send: Send, held: BodyHold
    ) -> bytes | int:
        """The whole body within the limits, or the status this answered for the app (0 when
        the client left, or the protocol answered a body that came too late).

        ``held`` takes the budget when the body's first bytes arrive (a head alone holds
        nothing): a large declared length whole, so an upload admitted is never refused
        halfway; a small or chunked body as its bytes come.
        """
        limit = self.max_body_bytes
        declared = 0
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared = int(value)
                if declared > limit:
                    detail = self.too_large(f"Content-Length {declared}")
                    return await self.refuse(scope, send, 413, detail)
        try:
            return await self.read_body(receive, held, declared)
        except asyncio.CancelledError:  # shutdown's grace period ended while we waited
            detail = "the server shut down before the body arrived"
            return await self.refuse(scope, send, 503, detail)
        except BodyTooLargeError:
            return await self.refuse(scope, send, 413, self.too_large(f"more than {limit} bytes"))
        except OverBudgetError:
            return await self.refuse_busy(scope, send)

    async def read_body(self, receive: Receive, held: BodyHold, declared: int) -> bytes | int:
        chunks: list[bytes] = []
        size = 0
        whole = declared if declared > SMALL_BODY_BYTES else 0  # taken with the first bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 0
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLargeError
            if not held.grow(max(size, whole)):
                raise OverBudgetError
            if not message.get("more_body", False):
                return b"".join((*chunks, chunk)) if chunks else chunk
            chunks.append(chunk)

    async def refuse_busy(self, scope: Scope, send: Send) -> int:
        budget = self.budget
        detail = (
            f"the server is holding as many request body bytes as it may "
            f"({budget.large_limit} for bodies over {SMALL_BODY_BYTES} bytes, {budget.limit} "
            "in all: IRIS_MAX_BUFFERED_BYTES); retry shortly"
        )
        return await self.refuse(scope, send, 503, detail, RETRY)

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
    ) -> int:
        """Answer for the app and close the connection; the status."""
        headers = {"Connection": "close", **(extra_headers or {})}
        await refusal(status, detail, scope.get("path", ""), headers)(scope, _no_receive, send)
        return status


def refusal(status: int, detail: str, path: str, headers: dict[str, str]) -> Response:
    """What the edge answers for the app: /v2 in the protocol's error shape, a problem
    document elsewhere."""
    if path == "/v2" or path.startswith("/v2/"):
        return json_response({"error": detail}, status, headers)
    return problem(status, detail, path, headers=headers)


def late_body(path: str, detail: str) -> bytes:
    """The whole HTTP response (408, connection closed) to a body that came too late, for
    service/server.py's protocol."""
    response = refusal(408, detail, path, {"Connection": "close"})
    status = HTTPStatus(response.status_code)
    head = b"".join(b"%s: %s\r\n" % pair for pair in response.raw_headers)
    return b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (status, status.phrase.encode(), head, response.body)


def path_pattern(path: str) -> re.Pattern[str]:
    """A route path with ``{parameters}`` as a regular expression of whole paths, each
    parameter a named group."""
    parts = re.split(r"\{([^}/]+)\}", path)  # literal, name, literal, name, ...
    pattern = "".join(
        f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile(f"^{pattern}$")


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
