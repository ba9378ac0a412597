"""One deadline for a whole blocking call, where httpx's own timeouts bound each read.

httpx gives every socket read (and write, and connect) the full timeout, so a server sending a
byte every few seconds keeps a call alive for ever. The blocking client sets :data:`DEADLINE`
for the call in its thread; the network streams below hand every read at most the time left,
and fail once it is gone. (The asyncio client puts the whole call in ``asyncio.timeout``.)
"""

from __future__ import annotations

import contextvars
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

# time.monotonic() by which the call in this thread (or context) must have its answer
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "iris_deadline", default=None
)


def bounded(timeout: float | None, kind: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` shortened to what is left of the deadline; ``kind`` once nothing is left."""
    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise kind("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(
            ssl_context, server_hostname, bounded(timeout, httpcore.ConnectTimeout)
        )
        return DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, bounded(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, bounded(timeout, httpcore.ConnectTimeout), socket_options
        )
        return DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """httpx's own transport, its connections made through :class:`DeadlineBackend`.

    httpx has no public way to pass a network backend, so the pool's is swapped after it is
    built (httpcore reads it only when it opens a connection). Should a later httpx lay its pool
    out differently, the transport is left as it is and the client still checks the deadline
    between the chunks of an answer (tests/test_client_hardening.py notices the difference).
    """
    found = httpx.HTTPTransport(limits=limits)
    pool = getattr(found, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if isinstance(pool, httpcore.ConnectionPool) and isinstance(backend, httpcore.NetworkBackend):
        pool._network_backend = DeadlineBackend(backend)
    return found
