"""The ceiling of ``bench/bench_http.py``: a raw ASGI app, no framework, under the same uvicorn.

Every HTTP request is read to the end of its body (not parsed) and answered 200 with one
constant JSON body of ``CEILING_BODY_BYTES`` bytes (the driver passes the size of a one-row
/predict answer), with the same two headers a /predict answer carries: content-type
application/json and content-length.

Run as ``python bench/ceiling.py`` with the same ``IRIS_`` environment as the service. It
runs ``iris-serve``'s own ``main()`` (``service/__main__.py``) with ``uvicorn.run`` replaced
by a recorder, so it sets up logging the same way and gets the very arguments iris-serve
would pass (today: an import string with ``factory=True``, host, port, workers, log level,
graceful-shutdown timeout, no server header), then calls the real ``uvicorn.run`` with
them and this module's factory. What iris-serve leaves to uvicorn's defaults stays at
them here too: with ``uvicorn[standard]`` installed, the uvloop event loop, the httptools
parser, and the access log on (a line per request to stdout at log level info). The app
itself imports nothing of the service.
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

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
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


def service_uvicorn_arguments() -> dict[str, Any]:
    """The arguments ``iris-serve`` passes to ``uvicorn.run``, taken from its own ``main()``.

    ``service.__main__.main`` reads the settings, sets up logging and calls ``uvicorn.run``;
    with ``uvicorn.run`` replaced by a recorder for the call, what it would have run with is
    captured, so the ceiling follows any change made there.
    """
    import uvicorn

    from service import __main__ as iris_serve

    captured: dict[str, Any] = {}

    def record(app: Any, **kwargs: Any) -> None:
        captured.update(kwargs, app=app)

    real = uvicorn.run
    uvicorn.run = record  # type: ignore[assignment]
    try:
        code = iris_serve.main()
    finally:
        uvicorn.run = real
    if code != 0 or not captured:
        raise SystemExit(code or 2)
    return captured


def main() -> int:
    import uvicorn

    arguments = service_uvicorn_arguments()
    service_app = arguments.pop("app")
    if not arguments.get("factory"):
        raise SystemExit(f"ceiling: iris-serve no longer runs a factory ({service_app!r})")
    logging.getLogger("ceiling").warning(
        "ceiling: uvicorn.run as iris-serve calls it (app %s): %s", service_app, arguments
    )
    uvicorn.run("ceiling:create_app", app_dir=str(Path(__file__).resolve().parent), **arguments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
