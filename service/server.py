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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
RESPONSE = (
    b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a bounded head, dropped trailers and a head deadline."""

    def __init__(
        self, *args: Any, header_timeout: float = DEFAULT_HEADER_TIMEOUT, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.head_timer: asyncio.TimerHandle | None = None
        self.in_head = True  # between a request's first byte and the end of its headers
        self.in_body = False  # between the end of its headers and the end of its message
        self.head_started = False  # a byte of the current head has come
        self.head_bytes = 0
        self.framing_bytes = 0
        self.began_in_chunk = False
        self.body_in_chunk = False

    # -- the deadline of a head ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_head_timer()
        super().connection_lost(exc)

    def start_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout, self.head_timed_out)

    def stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if not self.in_head or self.transport.is_closing():
            return
        if self.head_started:
            message = f"the request head did not arrive within {self.header_timeout:g} s"
            self.refuse(b"408 Request Timeout", message)
        else:
            self.transport.close()  # nothing came: nobody to answer

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.in_body = True, False
        self.head_started = True
        self.head_bytes = 0
        self.began_in_chunk = True
        self.start_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_head:
            super().on_header(name, value)
        # else: a trailer field of a chunked body, counted with the framing, never a header

    def on_headers_complete(self) -> None:
        self.in_head, self.in_body = False, True
        self.head_started = False
        self.framing_bytes = 0
        self.stop_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_in_chunk = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.in_body = False
        super().on_message_complete()

    # -- counting -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
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
        """Answer ``status`` unless a response has started, and close the connection."""
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            text = message.encode()
            self.transport.write(RESPONSE % (status, len(text), text))
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() now says the client is gone
            cycle.message_event.set()
        self.transport.close()
