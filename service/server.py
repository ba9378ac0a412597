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
- **A body must keep coming**: after a grace of ``rate_grace`` seconds, a body whose bytes
  have arrived at less than its floor on average is answered 408 and its connection closed
  (Apache's ``mod_reqtimeout`` ``MinRate``). The floor is ``min_rate`` bytes a second, or
  the rate its declared length needs to arrive within the body timeout when that is more
  (a body that cannot be in on time is refused now rather than at the deadline): a sender
  that trickles holds a connection, and the body budget it took, for seconds.
- **Framing is counted whole**: every byte of a body's message that is not body data
  (chunk sizes, chunk extensions, trailers) counts, over the whole message, against
  MAX_HEAD_BYTES plus the body's own size, so extensions between 1-byte chunks cannot
  stream forever.
- **Idle connections have their own allowance** (``max_idle``): a connection with no
  request in progress (just opened, a head not yet complete, or kept alive after an
  answer) is idle. Past the allowance the longest-idle one is closed (nginx reuses idle
  connections the same way), so sockets that say nothing never take the place of
  requests; requests in progress are counted by the app's edge (service/edge/limits.py).
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
import enum
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
LINGER_SECONDS = 2.0
MAX_CHECK_INTERVAL = 1.0
MIN_CHECK_INTERVAL = 0.05
DEFAULT_MIN_RATE = 4096  # bytes a second, on average since the body began
DEFAULT_RATE_GRACE = 5.0
DEFAULT_MAX_IDLE = 500
RATE_CHECK_SECONDS = 1.0  # after the grace, how often a body's rate is checked
RESPONSE = (
    b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
)
LateBody = Callable[[str, str], bytes]
"""(path, detail) -> the whole HTTP response to a body that came too late."""


def plain_late_body(path: str, detail: str) -> bytes:
    text = detail.encode()
    return RESPONSE % (b"408 Request Timeout", len(text), text)


class Phase(enum.Enum):
    """Where a connection is in its current request."""

    OPENED = "opened"  # no byte of a request yet: the head timeout runs, then a silent close
    HEAD = "head"  # a request's head is arriving: 408 when it is late
    BODY = "body"  # its body is arriving: 408 when it is late or slower than its floor
    ANSWERING = "answering"  # its message is in; its answer is the app's, then keep-alive
    LINGERING = "lingering"  # answered before its body was in: the rest is read and dropped


READING_HEAD = frozenset({Phase.OPENED, Phase.HEAD})


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


class IdleConnections:
    """The connections of one event loop with no request in progress, longest idle first;
    past the allowance the longest idle is closed."""

    def __init__(self, allowance: int) -> None:
        self.allowance = allowance
        self.members: dict[BoundedHttpToolsProtocol, None] = {}  # insertion order: idle since

    def add(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.members.pop(protocol, None)
        self.members[protocol] = None
        while len(self.members) > self.allowance:
            longest = next(iter(self.members))
            del self.members[longest]
            longest.evict()

    def discard(self, protocol: BoundedHttpToolsProtocol) -> None:
        self.members.pop(protocol, None)


_idle: dict[asyncio.AbstractEventLoop, IdleConnections] = {}


def idle_of(loop: asyncio.AbstractEventLoop, allowance: int) -> IdleConnections:
    found = _idle.get(loop)
    if found is None:
        found = _idle[loop] = IdleConnections(allowance)
    found.allowance = allowance
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


GOING_AWAY = "iris.going_away"
"""The scope key under which a long response (an event stream) may put an ``asyncio.Event``:
the protocol sets it when the server starts a graceful shutdown, so the response can say
goodbye and end at once instead of holding the shutdown until its grace period runs out."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bounded head, dropped trailers, and head and body deadlines."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        late_body: LateBody = plain_late_body,
        min_rate: float = DEFAULT_MIN_RATE,
        rate_grace: float = DEFAULT_RATE_GRACE,
        max_idle: int = DEFAULT_MAX_IDLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.late_body = late_body
        self.min_rate = min_rate
        self.rate_grace = rate_grace
        self.idle = idle_of(self.loop, max_idle)
        interval = min(header_timeout, body_timeout, rate_grace) / 4
        self.deadlines = deadlines_of(
            self.loop, min(max(interval, MIN_CHECK_INTERVAL), MAX_CHECK_INTERVAL)
        )
        self.deadline = float("inf")  # loop time by which the head or body must be in
        self.phase = Phase.OPENED
        self.head_bytes = 0
        self.began_in_chunk = False
        self.body_began = 0.0  # loop time of the end of the current request's head
        self.body_ends = float("inf")  # and the loop time by which its body must be in
        self.body_bytes = 0  # body data of the current message so far
        self.framing_bytes = 0  # and the bytes of its message that were not body data

    # -- deadlines ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.unfinished = Unfinished(transport, self.close_after_answer)
        self.deadline = self.loop.time() + self.header_timeout
        self.deadlines.watch(self)
        self.idle.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadlines.forget(self)
        self.idle.discard(self)
        super().connection_lost(exc)

    def evict(self) -> None:
        """Closed to make room for a newer connection: the idle allowance is full."""
        if self.transport.is_closing():
            return
        if self.phase is Phase.HEAD:
            message = "the server holds as many idle connections as it may; retry"
            self.refuse(b"503 Service Unavailable", message)
        else:
            self.transport.close()

    def deadline_passed(self) -> None:
        self.deadline = float("inf")
        if self.transport.is_closing():
            return
        if self.phase is Phase.LINGERING:
            self.transport.close()
        elif self.phase is Phase.BODY:
            self.check_body()
        elif self.phase is Phase.HEAD:
            message = f"the request head did not arrive within {self.header_timeout:g} s"
            self.refuse(b"408 Request Timeout", message)
        elif self.phase is Phase.OPENED:
            self.transport.close()  # nothing came: nobody to answer

    def check_body(self) -> None:
        """At a body's deadline: 408 when it is late, or when it comes slower than the floor;
        else the next check."""
        now = self.loop.time()
        rate = self.body_bytes / max(now - self.body_began, 1e-9)
        floor = self.body_floor()
        if now >= self.body_ends:
            detail = (
                f"the request body did not arrive within {self.body_timeout:g} s "
                "(IRIS_BODY_TIMEOUT_SECONDS)"
            )
        elif rate < floor:
            detail = (
                f"the request body came at {rate:.0f} bytes/s, below its floor of "
                f"{floor:.0f} bytes/s after {self.rate_grace:g} s (the larger of "
                "IRIS_BODY_MIN_RATE and what its length needs to arrive within "
                "IRIS_BODY_TIMEOUT_SECONDS)"
            )
        else:
            self.deadline = min(now + RATE_CHECK_SECONDS, self.body_ends)
            return
        self.refuse_with(self.late_body(self.scope.get("path", ""), detail))

    def body_floor(self) -> float:
        """Bytes a second the current body must average once its grace is over (read only
        then: most bodies are in long before)."""
        if not self.min_rate:
            return 0.0
        for name, value in self.scope.get("headers", ()):
            if name == b"content-length" and value.isdigit():
                return max(self.min_rate, int(value) / self.body_timeout)
        return self.min_rate

    def close_after_answer(self) -> None:
        """Close after an answer; linger when the request's body is still coming."""
        if self.phase is not Phase.BODY or self.transport.is_closing():
            self.transport.close()
            return
        self.phase = Phase.LINGERING
        self.deadline = self.loop.time() + LINGER_SECONDS
        self.transport.write_eof()  # the answer, then end of file: the client can read it

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = Phase.HEAD
        self.head_bytes = 0
        self.began_in_chunk = True
        self.deadline = self.loop.time() + self.header_timeout

    def on_headers_complete(self) -> None:
        self.phase = Phase.BODY
        self.idle.discard(self)
        self.body_bytes = self.framing_bytes = 0
        self.body_began = self.loop.time()
        self.body_ends = self.body_began + self.body_timeout
        self.deadline = min(self.body_began + self.rate_grace, self.body_ends)
        super().on_headers_complete()
        if self.cycle is not None:  # until its body is in (a small one: in this same chunk)
            self.cycle.transport = self.unfinished  # type: ignore[assignment]
        # The app holds the list of this request's headers; chunked trailers, which
        # uvicorn's on_header appends to self.headers, now go to a list nobody reads.
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.phase = Phase.ANSWERING
        self.deadline = float("inf")
        super().on_message_complete()
        if self.cycle is not None:
            self.cycle.transport = self.transport

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.idle.add(self)  # no pipelined request started: idle until the next head

    # -- counting -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.LINGERING:
            return  # the rest of a refused body: dropped unparsed
        began = self.phase
        body_before = self.body_bytes
        self.began_in_chunk = False
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.phase in READING_HEAD:
            # A head that began in this chunk is counted from the next one: the bytes of the
            # requests before it in the chunk are not its own. So a head is read to at most
            # MAX_HEAD_BYTES plus one chunk.
            if began in READING_HEAD and not self.began_in_chunk:
                self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse(
                    b"431 Request Header Fields Too Large",
                    f"request line and headers exceed {MAX_HEAD_BYTES} bytes",
                )
        elif began is Phase.BODY and self.phase is Phase.BODY:
            # The chunk's bytes that were not body data: chunk sizes, extensions, trailers.
            self.framing_bytes += len(data) - (self.body_bytes - body_before)
            if self.framing_bytes > MAX_HEAD_BYTES + self.body_bytes:
                self.refuse(
                    b"431 Request Header Fields Too Large",
                    f"chunk framing and trailers exceed {MAX_HEAD_BYTES} bytes more than "
                    "the body's own data",
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

    def shutdown(self) -> None:
        """A graceful shutdown: a response that asked to hear of it (GOING_AWAY) is told."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            going_away = cycle.scope.get(GOING_AWAY)
            if isinstance(going_away, asyncio.Event):
                going_away.set()
        super().shutdown()
