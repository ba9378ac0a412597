"""The ceiling of ``bench/bench_http.py``: a raw ASGI app, no framework, under uvicorn at its best.

Every HTTP request is read to the end of its body (not parsed) and answered 200 with one
constant JSON body of ``CEILING_BODY_BYTES`` bytes (the driver passes the size of a one-row
/predict answer), with the same two headers a /predict answer carries: content-type
application/json and content-length. The app itself imports nothing of the service.

Run as ``python bench/ceiling.py``; it listens on ``IRIS_HOST``:``IRIS_PORT`` (as the driver
sets them for every server it starts) in one process. uvicorn runs in its fastest
configuration (:data:`UVICORN_CONFIGURATION`), not with the service's arguments: the uvloop
event loop, the httptools parser, no access log, no lifespan, no server header, log level
warning. That is the stack's best for this app, against which the service at its default
settings is judged (target P1).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

BODY_BYTES_ENV = "CEILING_BODY_BYTES"
DEFAULT_BODY_BYTES = 190
"""About the size of a one-row /predict answer, when the driver does not say."""

UVICORN_CONFIGURATION: dict[str, object] = {
    "loop": "uvloop",
    "http": "httptools",
    "access_log": False,
    "lifespan": "off",
    "server_header": False,
    "log_level": "warning",
    "workers": 1,
}
"""uvicorn's fastest settings for this app (``uvicorn.run`` keyword arguments)."""


def describe() -> str:
    """The configuration in one line, for the benchmark's tables."""
    return " ".join(f"{key}={value}" for key, value in UVICORN_CONFIGURATION.items())


def constant_body(size: int) -> bytes:
    """A /predict-shaped JSON document of exactly ``size`` bytes (padded in model_version)."""
    template = (
        '{{"model_version":"{pad}","predictions":[{{"label":"setosa","class_index":0,'
        '"probabilities":{{"setosa":0.9999036634027807,"versicolor":9.579174493035498e-05,'
        '"virginica":5.448522891287818e-07}}}}]}}'
    )
    bare = len(template.format(pad=""))
    if size < bare:
        raise ValueError(f"{BODY_BYTES_ENV}={size}: the smallest body is {bare} bytes")
    return template.format(pad="x" * (size - bare)).encode()


def create_app() -> ASGIApp:
    """The ASGI callable; the factory reads the body size once per worker."""
    body = constant_body(int(os.environ.get(BODY_BYTES_ENV, DEFAULT_BODY_BYTES)))
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ],
    }
    answer: Message = {"type": "http.response.body", "body": body}

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off: only HTTP requests arrive
            return
        more = True
        while more:  # read the request body to its end, as the service must
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
        await send(start)
        await send(answer)

    return app


def main() -> int:
    import uvicorn

    host = os.environ.get("IRIS_HOST", "127.0.0.1")
    port = int(os.environ.get("IRIS_PORT", "8000"))
    logging.getLogger("ceiling").warning("ceiling: uvicorn %s", describe())
    uvicorn.run(
        "ceiling:create_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=host,
        port=port,
        **UVICORN_CONFIGURATION,  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
