"""The gRPC ceiling of ``bench/bench_http.py``'s grpc section: grpc.aio at its plainest.

One generic handler for ``/inference.GRPCInferenceService/ModelInfer`` that takes the
request's bytes unparsed and answers every call with the same bytes: the file named by
``CEILING_ANSWER_FILE`` (the driver writes the service's own serialised answer to the
request it sends). No protobuf, no model, no health or reflection service, no limit on
calls in flight; one process, its event loop asyncio's (grpc.aio's own poller). What a call
costs here is what it costs grpc's Python server on this machine before any work: the floor
under the service's gRPC and MLServer's, as ``bench/ceiling.py`` is for HTTP.

Run as ``python bench/grpc_ceiling.py``: gRPC on 127.0.0.1:``IRIS_GRPC_PORT``, and on
``IRIS_HOST``:``IRIS_PORT`` an HTTP/1.1 answer of 200 to anything, so that the benchmark's
launcher (which polls a readiness path) sees it ready. It imports nothing of the service.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

ANSWER_FILE_ENV = "CEILING_ANSWER_FILE"
SERVICE = "inference.GRPCInferenceService"
STREAMS = 100  # calls in flight on one connection, as the service allows
READY = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


async def ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """200 to any HTTP request: the launcher's readiness poll."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(READY)
    await writer.drain()
    writer.close()


async def serve(answer: bytes, grpc_port: int, host: str, http_port: int) -> None:
    async def model_infer(request: bytes, context: Any) -> bytes:
        return answer

    server = aio.server(options=[("grpc.max_concurrent_streams", STREAMS)])
    handler = grpc.unary_unary_rpc_method_handler(
        model_infer, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    http = await asyncio.start_server(ready, host, http_port)
    async with http:
        await server.wait_for_termination()


def main() -> None:
    answer = Path(os.environ[ANSWER_FILE_ENV]).read_bytes()
    asyncio.run(
        serve(
            answer,
            int(os.environ["IRIS_GRPC_PORT"]),
            os.environ.get("IRIS_HOST", "127.0.0.1"),
            int(os.environ.get("IRIS_PORT", "8000")),
        )
    )


if __name__ == "__main__":
    main()
