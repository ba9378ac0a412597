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
- **A short answer leaves in one write**: uvicorn writes a response's head and its body
  separately, two system calls where one would do; :class:`HeadCork` holds a head that
  declares its length until the body's first write and sends both together.

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


class HeadCork:
    """A connection's transport as its request cycles see it: the head of a response that
    declares a content-length is held until the next write, so head and body leave in one
    system call. A streamed answer's head (chunked) leaves at once, as does the 100 Continue
    interim answer.

    Whatever else happens on the connection lets a held head go first: another write (the
    two leave together, in order), closing, the end of the response (a HEAD answer writes no
    body), and new bytes from the client (uvicorn may answer a malformed request itself).
    """

    __slots__ = ("armed", "held", "on_close", "transport")

    def __init__(self, transport: asyncio.Transport, on_close: Callable[[], None]) -> None:
        self.transport = transport
        self.on_close = on_close
        self.held = b""
        self.armed = False  # the next write is a response head

    def write(self, data: bytes) -> None:
        if self.held:
            self.transport.writelines((self.held, data))
            self.held = b""
        elif self.armed and not data.startswith(b"HTTP/1.1 100 "):
            self.armed = False
            if b"\r\ncontent-length: " in data:
                self.held = data
            else:
                self.transport.write(data)
        else:
            self.transport.write(data)

    def flush(self) -> None:
        if self.held:
            self.transport.write(self.held)
            self.held = b""

    def close(self) -> None:
        self.flush()
        self.on_close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        self.flush()
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
        self.cork = HeadCork(transport, self.close_after_answer)
        self.lingering = False
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
        """Close after an answer; linger first when the request's body is still coming."""
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
        if self.cycle is not None:
            self.cycle.transport = self.cork  # type: ignore[assignment]
            self.cork.armed = True
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

    def on_response_complete(self) -> None:
        self.cork.flush()
        super().on_response_complete()

    # -- counting -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # the rest of a refused body: dropped unparsed
        began_in_head = self.in_head
        self.began_in_chunk = self.body_in_chunk = False
        if self.cork.held:
            self.cork.flush()
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
        self.cork.flush()
        if cycle is None or not cycle.response_started:
            self.transport.write(response)
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() now says the client is gone
            cycle.message_event.set()
        self.transport.close()
