"""The hot routes, answered from the app's table before FastAPI's routing."""

from __future__ import annotations

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.edge.limits import no_receive
from service.edge.request_metrics import ROUTE
from service.errors import ProblemError
from service.inference import INLINE_BYTES, ON_EVENT_LOOP, NotLoadedError, in_compute_pool
from service.routing import Answer, BodyHandler, HotRoute, HotRoutes


class HotRouteDispatch:
    """A request at a hot route's path is answered here: its handler runs on the body (in
    the compute pool when large, :func:`run`) and its answer is sent, or its error
    in the route's shape; another method at that path is 405 naming the allowed ones.
    Everything else goes on to the app."""

    def __init__(self, app: ASGIApp, routes: HotRoutes) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.routes.match(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        route = found.get(method)
        if route is None:
            some = next(iter(found.values()))
            scope[ROUTE] = some.path  # the template names the route in the metrics
            detail = f"{method} is not allowed on {scope['path']}"
            error = ProblemError(405, detail, headers={"Allow": ", ".join(sorted(found))})
            await some.errors(Request(scope), error)(scope, receive, send)
            return
        scope[ROUTE] = route.path
        body = b""
        while True:  # one message when the limits read the body (service/edge/limits.py)
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await answer(scope, send, route, body)


async def answer(scope: Scope, send: Send, route: HotRoute, body: bytes) -> None:
    """Run a hot route's handler and send its JSON, or the error it raised."""
    request = Request(scope)
    try:
        content = await run(route.handler, request, body)
    except Exception as error:
        response = route.errors(request, error)
        await response(scope, no_receive, send)
        return
    if isinstance(content, Answer):
        payload, headers = content.content, list(content.headers)
    else:
        payload, headers = content, [(b"content-type", b"application/json")]
    headers.append((b"content-length", b"%d" % len(payload)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def run(handler: BodyHandler, request: Request, body: bytes) -> bytes | Answer:
    """Run a body handler inline for a small plain body, in the compute pool otherwise (a
    compressed body may inflate to many times its size; a pinned version may need loading
    from disk: the inline run gives way to the pool when it does)."""
    if len(body) > INLINE_BYTES:
        return await in_compute_pool(handler, request, body)
    for name, _ in request.scope["headers"]:
        if name == b"content-encoding":
            return await in_compute_pool(handler, request, body)
    token = ON_EVENT_LOOP.set(True)
    try:
        return handler(request, body)
    except NotLoadedError:
        pass
    finally:
        ON_EVENT_LOOP.reset(token)
    return await in_compute_pool(handler, request, body)
