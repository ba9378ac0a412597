"""The access log (``IRIS_ACCESS_LOG``): one JSON line per request, and its request id.

Off by default, like Triton's and TF Serving's: the Prometheus metrics already count every
request by route, method and status with its latency, and a line per request costs about
50 µs of server CPU, more than half of what a one-row /predict costs (docs/performance.md).
When on, every request gets
an id (the client's ``X-Request-ID`` when it sends a sane one, else a new one), echoed in the
answer's ``X-Request-ID`` and written with the method, path, status and duration::

    {"request_id":"3f9c0a1e5b7d4c22-1a","method":"POST","path":"/predict","status":200,"ms":0.41}

The lines go to standard output through the ``iris.access`` logger, apart from the log.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("iris.access")
REQUEST_ID = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def access_logger() -> logging.Logger:
    """``iris.access`` writing bare lines to standard output (configured once)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class AccessLog:
    """ASGI middleware: a request id for every HTTP request, and its JSON line when done."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = access_logger()
        # A process prefix and a counter: unique across workers and restarts, no syscall.
        self.prefix = os.urandom(8).hex().encode()
        self.counter = itertools.count(1)

    def request_id(self, scope: Scope) -> bytes:
        for name, value in scope["headers"]:
            if name == REQUEST_ID and _SANE_ID.fullmatch(value):
                return bytes(value)
        return b"%s-%x" % (self.prefix, next(self.counter))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self.request_id(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, request_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            line = {
                "request_id": request_id.decode(),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 3),
            }
            self.log.info(orjson.dumps(line).decode())
