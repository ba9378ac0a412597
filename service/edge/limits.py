"""Admission and the body's bounds: the edge's first layer that can refuse a request.

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

The body is read here, whole, and handed on as one message, so an oversized or untimely
request is answered without the layers inside ever seeing it.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.admission import RETRY, SMALL_BODY_BYTES, Admission, BodyBudget, BodyHold
from service.errors import problem
from service.responses import json_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Refused(Exception):  # noqa: N818 (not an error: an answer)
    """A request the edge answers itself, with this status, detail and headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class Limits:
    """Admission, then the body within its size limit and the body budget."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_buffered_bytes: int, admission: Admission
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.budget = BodyBudget(max_buffered_bytes)
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admission = self.admission
        if not admission.enter():
            await refuse(scope, send, Refused(503, admission.busy_detail(), RETRY))
            return
        scope[Admission.SCOPE_KEY] = admission  # event streams move to their own allowance
        try:
            if scope["method"] not in BODY_METHODS:
                await self.app(scope, receive, send)
                return
            held = self.budget.hold()  # the body's bytes, given back when the request ends
            try:
                body = await self.body(scope, receive, held)
                if body is not None:
                    await self.app(scope, replaying(body, receive), send)
            except Refused as refused:
                await refuse(scope, send, refused)
            finally:
                held.release()
        finally:
            admission.leave()

    async def body(self, scope: Scope, receive: Receive, held: BodyHold) -> bytes | None:
        """The whole body within the limits; None when the client left (or the protocol
        answered a body that came too late).

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
                    raise Refused(413, self.too_large(f"Content-Length {declared}"))
        whole = declared if declared > SMALL_BODY_BYTES else 0  # taken with the first bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:  # shutdown's grace period ended while we waited
                raise Refused(503, "the server shut down before the body arrived") from None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, self.too_large(f"more than {limit} bytes"))
            if not held.grow(max(size, whole)):
                raise Refused(503, self.busy(), RETRY)
            if not message.get("more_body", False):
                return b"".join((*chunks, chunk)) if chunks else chunk
            chunks.append(chunk)

    def busy(self) -> str:
        budget = self.budget
        return (
            f"the server is holding as many request body bytes as it may "
            f"({budget.large_limit} for bodies over {SMALL_BODY_BYTES} bytes, {budget.limit} "
            "in all: IRIS_MAX_BUFFERED_BYTES); retry shortly"
        )

    def too_large(self, what: str) -> str:
        return (
            f"request body too large: {what}; the limit is {self.max_body_bytes} bytes "
            "(IRIS_MAX_BODY_BYTES)"
        )


async def refuse(scope: Scope, send: Send, refused: Refused) -> None:
    """Answer for the app and close the connection."""
    headers = {"Connection": "close", **refused.headers}
    response = refusal(refused.status, refused.detail, scope.get("path", ""), headers)
    await response(scope, no_receive, send)


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


async def no_receive() -> Message:
    """The receive of an answer sent for the app: the request is over."""
    return {"type": "http.disconnect"}
