"""uvicorn's httptools protocol with a bound on the request head (uvicorn itself has none)."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Answers 431 and closes once a request line and headers pass MAX_HEAD_BYTES.

    Without it the parser keeps an endless header line in memory until the client stops.
    Bytes are counted per chunk received while the head is incomplete, so a head is read to
    at most MAX_HEAD_BYTES plus one chunk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_head = True
        self.head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        began_in_head = self.in_head
        super().data_received(data)
        if not (began_in_head and self.in_head) or self.transport.is_closing():
            return
        self.head_bytes += len(data)
        if self.head_bytes > MAX_HEAD_BYTES:
            message = f"request line and headers exceed {MAX_HEAD_BYTES} bytes".encode()
            self.transport.write(TOO_LARGE % (len(message), message))
            self.transport.close()
