"""The parts of uvicorn's httptools protocol that service/server.py relies on, by name.

They are not uvicorn's public API: pyproject.toml bounds uvicorn above, and this test fails
loudly when an upgrade renames or moves one, before anything misbehaves quietly.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.server import BoundedHttpToolsProtocol

OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
)
PROTOCOL_ATTRIBUTES = ("loop", "transport", "cycle", "scope", "headers")
CYCLE_ATTRIBUTES = ("transport", "response_started", "response_complete", "disconnected")


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_overridden_methods_are_uvicorns_with_the_same_signatures() -> None:
    for name in OVERRIDDEN:
        ours, theirs = getattr(BoundedHttpToolsProtocol, name), getattr(HttpToolsProtocol, name)
        assert ours is not theirs, name
        assert inspect.signature(ours) == inspect.signature(theirs), name


def test_the_attributes_the_bounded_protocol_reads_are_there() -> None:
    answered = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        assert message["body"] == b"hello"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        answered.set()

    async def exchange() -> None:
        config = Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol = BoundedHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        for name in PROTOCOL_ATTRIBUTES:
            assert hasattr(protocol, name), name
        protocol.data_received(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
        cycle = protocol.cycle
        for name in CYCLE_ATTRIBUTES:
            assert hasattr(cycle, name), name
        assert isinstance(cycle.message_event, asyncio.Event)
        assert cycle.transport is protocol.unfinished  # type: ignore[comparison-overlap]
        protocol.data_received(b"lo")
        await asyncio.wait_for(answered.wait(), 5)
        assert cycle.transport is transport
        assert cycle.response_complete
        assert transport.written.startswith(b"HTTP/1.1 200")
        assert protocol.scope["path"] == "/x"
        protocol.connection_lost(None)

    asyncio.run(exchange())
