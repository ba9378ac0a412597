"""``iris-serve`` / ``python -m service``: run the app under uvicorn with the settings.

``iris-serve --help`` lists every setting's flag, variable and default (service/cli.py);
``iris-serve migrate [DATA_DIR]`` copies a data directory into PostgreSQL.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from service import cli
from service.config import Settings, get_settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The arguments ``iris-serve`` gives uvicorn.run besides the app."""
    # Imported here: --help and --version need neither uvicorn nor the app.
    from service.edge import late_body
    from service.server import BoundedHttpToolsProtocol

    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": math.ceil(settings.graceful_shutdown_seconds),
        "server_header": False,
        "access_log": False,  # uvicorn's text lines; IRIS_ACCESS_LOG writes ours
        # Nothing here reads the client's address: no X-Forwarded-For parsing per request.
        "proxy_headers": False,
        # Requests in progress are counted by the edge (IRIS_MAX_CONNECTIONS), idle
        # connections by the protocol (IRIS_MAX_IDLE_CONNECTIONS): uvicorn's own limit would
        # count both together, so sockets that say nothing could take the place of requests.
        "limit_concurrency": None,
        "http": functools.partial(
            BoundedHttpToolsProtocol,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            late_body=late_body,
            min_rate=settings.body_min_rate or 0.0,
            rate_grace=settings.body_rate_grace_seconds,
            max_idle=settings.max_idle_connections,
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["migrate"]:  # iris-serve migrate [DATA_DIR]: files into PostgreSQL
        from service.postgres.migrate import main as migrate

        return migrate(args[1:])
    given = cli.parse_flags(args)  # --help, --version, usage errors: SystemExit
    try:
        settings = cli.settings_from(given)
    except ValidationError as error:
        print(f"iris-serve: invalid settings: {cli.describe(error, given)}", file=sys.stderr)
        return 2
    # uvicorn builds the app (in each worker, or here) from the environment: get_settings().
    cli.export_settings(settings, given)
    get_settings.cache_clear()
    return serve(settings)


def grpc_port_taken(settings: Settings) -> str | None:
    """Why IRIS_GRPC_PORT cannot be had, or None. Checked once here, before the workers bind it
    (with several workers they share it, so their own binds could not tell another server's
    listener from a sibling's)."""
    import socket

    if settings.grpc_port == 0:
        return None
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((settings.host, settings.grpc_port))
        except OSError as error:
            return (
                f"IRIS_GRPC_PORT {settings.grpc_port} on {settings.host} cannot be had "
                f"({error.strerror}): choose another port, or 0 to turn gRPC off"
            )
    return None


def serve(settings: Settings) -> int:
    """Run uvicorn until SIGTERM or SIGINT; 2 when the token file is unsafe."""
    import uvicorn

    from service.deps import TOKEN_FILE, InsecureTokenFileError, check_token_file

    try:
        check_token_file(settings.data_dir / TOKEN_FILE)
    except InsecureTokenFileError as error:
        print(f"iris-serve: {error}", file=sys.stderr)
        return 2
    busy = grpc_port_taken(settings)
    if busy is not None:
        print(f"iris-serve: {busy}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker keeps its own counters; multiprocess mode merges them for /metrics.
        metrics_dir = tempfile.mkdtemp(prefix="iris-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # uvicorn drains, restores the previous handler and re-raises the signal it caught; this
    # handler turns that into a clean exit (status 0) instead of death by SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn.run("service.main:create_app", factory=True, **uvicorn_options(settings))
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
