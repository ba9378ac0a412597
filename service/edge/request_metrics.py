"""Request metrics: every HTTP request counted by route, method and status, with its latency."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics

ROUTE = "iris.route"
"""The scope key under which a layer that answers a route itself names it (its template)."""


class RequestMetrics:
    """Count each request when it ends. The route is the template that answered it (a hot
    route's, or FastAPI's ``scope["route"]``), or ``unmatched``; the status is the one sent
    (500 when the app raised, 0 when the client left before an answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception:
            status = status or 500
            raise
        finally:
            route = scope.get(ROUTE) or getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.observe_request(route, scope["method"], status, time.perf_counter() - started)
