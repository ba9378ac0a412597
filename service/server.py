"""uvicorn's httptools protocol with the bounds uvicorn lacks.

- **The request head** (request line and headers) may hold at most MAX_HEAD_BYTES: past
  that the answer is 431 and the connection is closed, instead of the parser buffering an
  endless header line. Each request of a pipelined chunk is counted on its own.
- **Chunked trailers** never become headers: uvicorn appends trailer fields to the header
  list the app already holds, so an ``Authorization`` or ``Content-Type`` sent only as a
  trailer would pass for a header. They are dropped here, and the framing bytes of a body
  (chunk sizes, extensions, trailers: everything that is not body data) count against the
  same bound as a head.
- **A head must arrive in time**: from the moment a connection opens, or the first byte of a
  request arrives on a kept-alive one, the head has ``header_timeout`` seconds (nginx's
  ``client_header_timeout``); then the connection is closed (with a 408 when part of a head
  came). Idle keep-alive connections are uvicorn's, closed after its keep-alive timeout.
- **So must a body**: from the end of its head, ``body_timeout`` seconds (nginx's
  ``client_body_timeout``); then the answer is a 408 (``late_body`` writes it, in the app's
  error shape) and the connection is closed.
- **A refused upload is answered, not reset**: when the app answers before it has read the
  whole body (413, 503) and closes, the connection is half-closed and what the client still
  sends is read and dropped for up to LINGER_SECONDS (nginx's ``lingering_close``), so the
  client reads the answer instead of a connection reset.

The deadlines cost a request two assignments, not a timer of its own: one timer per event
loop (:class:`Deadlines`) checks every connection a few times per shortest timeout, so a
deadline is enforced within a quarter of its length (at most 1 s) after it passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
LINGER_SECONDS = 2.0
MAX_CHECK_INTERVAL = 1.0
MIN_CHECK_INTERVAL = 0.05
RESPONSE = (
    b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
)
LateBody = Callable[[str, str], bytes]
"""(path, detail) -> the whole HTTP response to a body that came too late."""


def plain_late_body(path: str, detail: str) -> bytes:
    text = detail.encode()
    return RESPONSE % (b"408 Request Timeout", len(text), text)


class Deadlines:
    """The connections of one event loop that have a deadline, checked by one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.watched: set[BoundedHttpToolsProtocol] = set()
        self.timer: asyncio.TimerHandle | None = None

    def watch(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.watched.add(protocol)
        if self.timer is None:
            self.timer = self.loop.call_later(self.interval, self.check)

    def forget(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.watched.discard(protocol)

    def check(self) -> None:
        now = self.loop.time()
        for protocol in [p for p in self.watched if p.deadline <= now]:
            protocol.deadline_passed()
        self.timer = self.loop.call_later(self.interval, self.check) if self.watched else None


_deadlines: dict[asyncio.AbstractEventLoop, Deadlines] = {}


def deadlines_of(loop: asyncio.AbstractEventLoop, interval: float) -> Deadlines:
    found = _deadlines.get(loop)
    if found is None or found.interval > interval:
        found = _deadlines[loop] = Deadlines(loop, interval)
    return found


class Unfinished:
    """The transport a request's cycle holds while the request's body is still arriving.

    Closing it (the app answered before reading the whole body: 413, 503) lingers instead:
    ``linger`` half-closes the connection and drops what the client still sends for a while,
    so the client reads the answer instead of a reset. Everything else is the transport's.
    """

    __slots__ = ("linger", "transport")

    def __init__(self, transport: asyncio.Transport, linger: Callable[[], None]) -> None:
        self.transport = transport
        self.linger = linger

    def close(self) -> None:
        self.linger()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bounded head, dropped trailers, and head and body deadlines."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        late_body: LateBody = plain_late_body,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.late_body = late_body
        interval = min(header_timeout, body_timeout) / 4
        self.deadlines = deadlines_of(
            self.loop, min(max(interval, MIN_CHECK_INTERVAL), MAX_CHECK_INTERVAL)
        )
        self.deadline = float("inf")  # loop time by which the head or body must be in
        self.lingering = False  # an answer went out before the body: the rest is dropped
        self.in_head = True  # between a request's first byte and the end of its headers
        self.in_body = False  # between the end of its headers and the end of its message
        self.head_started = False  # a byte of the current head has come
        self.head_bytes = 0
        self.framing_bytes = 0
        self.began_in_chunk = False
        self.body_in_chunk = False

    # -- deadlines ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.unfinished = Unfinished(transport, self.close_after_answer)
        self.deadline = self.loop.time() + self.header_timeout
        self.deadlines.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadlines.forget(self)
        super().connection_lost(exc)

    def deadline_passed(self) -> None:
        self.deadline = float("inf")
        if self.transport.is_closing():
            return
        if self.lingering:
            self.transport.close()
        elif self.in_body:
            detail = f"the request body did not arrive within {self.body_timeout:g} s"
            path = self.scope.get("path", "")
            self.refuse_with(self.late_body(path, f"{detail} (IRIS_BODY_TIMEOUT_SECONDS)"))
        elif self.head_started:
            message = f"the request head did not arrive within {self.header_timeout:g} s"
            self.refuse(b"408 Request Timeout", message)
        elif self.in_head:
            self.transport.close()  # nothing came: nobody to answer

    def close_after_answer(self) -> None:
        """Close after an answer; linger when the request's body is still coming."""
        if not self.in_body or self.transport.is_closing():
            self.transport.close()
            return
        self.lingering = True
        self.in_body = False
        self.deadline = self.loop.time() + LINGER_SECONDS
        self.transport.write_eof()  # the answer, then end of file: the client can read it

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.in_body = True, False
        self.head_started = True
        self.head_bytes = 0
        self.began_in_chunk = True
        self.deadline = self.loop.time() + self.header_timeout

    def on_headers_complete(self) -> None:
        self.in_head, self.in_body = False, True
        self.head_started = False
        self.framing_bytes = 0
        self.deadline = self.loop.time() + self.body_timeout
        super().on_headers_complete()
        if self.cycle is not None:  # until its body is in (a small one: in this same chunk)
            self.cycle.transport = self.unfinished  # type: ignore[assignment]
        # The app holds the list of this request's headers; chunked trailers, which
        # uvicorn's on_header appends to self.headers, now go to a list nobody reads.
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.body_in_chunk = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        self.deadline = float("inf")
        super().on_message_complete()
        if self.cycle is not None:
            self.cycle.transport = self.transport

    # -- counting -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a refused body: dropped unparsed
        began_in_head = self.in_head
        self.began_in_chunk = self.body_in_chunk = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.in_head:
            # A head that began in this chunk is counted from the next one: the bytes of the
            # requests before it in the chunk are not its own. So a head is read to at most
            # MAX_HEAD_BYTES plus one chunk.
            if began_in_head and not self.began_in_chunk:
                self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse(
                    b"431 Request Header Fields Too Large",
                    f"request line and headers exceed {MAX_HEAD_BYTES} bytes",
                )
        elif self.in_body:
            self.framing_bytes = 0 if self.body_in_chunk else self.framing_bytes + len(data)
            if self.framing_bytes > MAX_HEAD_BYTES:
                self.refuse(
                    b"431 Request Header Fields Too Large",
                    f"chunk framing and trailers exceed {MAX_HEAD_BYTES} bytes",
                )

    def refuse(self, status: bytes, message: str) -> None:
        """Answer ``status`` in plain text unless a response has started, and close."""
        text = message.encode()
        self.refuse_with(RESPONSE % (status, len(text), text))

    def refuse_with(self, response: bytes) -> None:
        """Write ``response`` unless one has started, and close the connection."""
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(response)
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() now says the client is gone
            cycle.message_event.set()
        self.transport.close()
