"""Where the server's CPU goes on one-row /predict: cProfile inside one uvicorn worker.

``python bench/profile_predict.py [--seconds 10] [--connections 32] [--top 35]``

The app runs in this process under ``uvicorn.Server`` as ``iris-serve`` runs it
(``uvicorn_options`` and the ``create_app`` factory: the bounded protocol, no access log), on
a free port of 127.0.0.1 with a temporary data directory; cProfile records the event-loop
thread, which is where a one-row /predict runs (bodies under
``service.inference.INLINE_BYTES`` skip the executor). ``wrk`` with
``bench/post.lua`` drives it from a separate process. The profile's overhead
inflates Python-heavy code more than C code, so read the shares, not the absolute times.
Not part of ``make bench-http``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ONE_ROW = {
    "instances": [
        {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    ]
}


def drive(
    port: int,
    body: Path,
    *,
    seconds: int,
    connections: int,
    server: Any,
    loop: list[asyncio.AbstractEventLoop],
    profile: cProfile.Profile,
) -> None:
    """Wait for /readyz, warm up, profile the event loop's thread during wrk, then stop."""
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                break
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/predict"
    command = ["wrk", "-t1", f"-c{connections}", "-s", str(BENCH / "post.lua")]
    subprocess.run([*command, "-d2s", url, "--", str(body)], capture_output=True, check=False)
    # enable() and disable() act on the calling thread: run them on the event loop's.
    loop[0].call_soon_threadsafe(profile.enable)
    out = subprocess.run(
        [*command, f"-d{seconds}s", url, "--", str(body)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result = json.loads(line.removeprefix("WRK_JSON "))
            print(
                f"wrk c{connections} {seconds} s under cProfile: {result['requests']} requests, "
                f"{result['rps']:.0f} req/s, p50 {result['p50_us'] / 1e3:.2f} ms",
                file=sys.stderr,
            )
    loop[0].call_soon_threadsafe(profile.disable)
    time.sleep(0.5)
    server.should_exit = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    args = parser.parse_args(argv)

    import uvicorn
    from uvicorn._compat import asyncio_run

    from harness.servers import free_port

    with tempfile.TemporaryDirectory(prefix="iris-profile-") as tmp:
        os.environ["IRIS_DATA_DIR"] = tmp
        os.environ["IRIS_API_TOKEN"] = "profile"
        body = Path(tmp) / "one-row.json"
        body.write_text(json.dumps(ONE_ROW))
        port = free_port()
        logging.basicConfig(level="INFO")
        # The access log goes to a file, as the benchmark's servers' logs do.
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115
        os.environ["IRIS_HOST"], os.environ["IRIS_PORT"] = "127.0.0.1", str(port)
        from service.__main__ import uvicorn_options
        from service.config import Settings

        options = uvicorn_options(Settings()) | {"timeout_graceful_shutdown": 8}
        config = uvicorn.Config("service.main:create_app", factory=True, **options)
        server = uvicorn.Server(config)
        for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(log)
        # CPU time of the event loop's thread, so that time the thread spends preempted on
        # a busy machine is not charged to whatever function it was in.
        profile = cProfile.Profile(time.thread_time)
        loop: list[asyncio.AbstractEventLoop] = []

        async def serve() -> None:
            loop.append(asyncio.get_running_loop())
            print(f"event loop: {type(loop[0]).__module__}.{type(loop[0]).__name__}")
            threading.Thread(
                target=drive,
                args=(port, body),
                kwargs={
                    "seconds": args.seconds,
                    "connections": args.connections,
                    "server": server,
                    "loop": loop,
                    "profile": profile,
                },
                daemon=True,
            ).start()
            await server.serve()

        asyncio_run(serve(), loop_factory=config.get_loop_factory())
        log.close()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(args.sort).print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
