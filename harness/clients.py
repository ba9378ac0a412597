"""What tests/test_client.py and tests/test_client_cli.py share: the server, an oracle, stubs.

The oracle is the model core itself: the server's stored model, loaded from its data
directory, computes the probabilities a prediction must carry (the server writes float64
in the shortest text that reads back to the same bits, so they compare exactly).
"""

from __future__ import annotations

import contextlib
import csv
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np

from harness.servers import ServerProcess, server_pool, wait_for
from model.data import CLASSES, FEATURES
from model.network import predict_proba
from model.persistence import ModelStore

TOKEN = "client-test-token-0123456789abcdef"
MAX_INSTANCES = 50
JOB_SECONDS = 30.0
# Minutes of training: ended by cancel or by killing the server long before its end.
LONG_JOB: dict[str, Any] = {"epochs": 10_000, "hidden_units": 256, "batch_size": 1, "seed": 1}


@contextlib.contextmanager
def client_server(tmp_path: Path, **env: str) -> Iterator[ServerProcess]:
    """iris-serve with a fixed token and a small rows-per-request limit, so inputs split."""
    with server_pool(tmp_path) as start:
        yield start(
            None,
            {
                "IRIS_API_TOKEN": TOKEN,
                "IRIS_MAX_INSTANCES": str(MAX_INSTANCES),
                "IRIS_LOG_LEVEL": "warning",
                **env,
            },
        )


def expected_probabilities(server: ServerProcess, version: str, raw: np.ndarray[Any, Any]) -> Any:
    """(n, 3) probabilities of ``version`` for raw measurements, computed by the model core."""
    stored = ModelStore(server.data_dir / "models").load(version)
    return predict_proba(stored.model, np.asarray(raw, dtype=np.float64))


def flowers(n: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """n rows of plausible measurements in cm, 2 decimals (distinct rows: order shows)."""
    rng = np.random.default_rng(seed)
    return rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(n, 4)).round(2)


def write_csv(
    path: Path, raw: np.ndarray[Any, Any], species: Sequence[str] | None = None, **extra: str
) -> Path:
    """A CSV with the measurement header (and species, and constant extra columns)."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*FEATURES, *(["species"] if species is not None else []), *extra])
        for i, row in enumerate(raw.tolist()):
            writer.writerow([*row, *([species[i]] if species is not None else []), *extra.values()])
    return path


def species_of(n: int) -> list[str]:
    return [CLASSES[i % 3] for i in range(n)]


def one_line_error(stderr: str) -> str:
    """The single stderr line of a failed ``iris`` command (no usage block, no traceback)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("iris: error: "), stderr
    return lines[0]


def wait_running(server: ServerProcess, job_id: str) -> dict[str, Any]:
    """The job once it trains (an epoch done), polled over plain HTTP."""

    def probe() -> dict[str, Any] | None:
        with server.client() as http:
            job: dict[str, Any] = http.get(f"/train/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        return job if job["status"] == "running" and job["progress"]["epoch"] >= 1 else None

    return wait_for(probe, JOB_SECONDS, f"job {job_id} running", interval=0.05)


def wait_idle(server: ServerProcess) -> None:
    """Until no job is queued or running (one job at a time across the server)."""

    def probe() -> bool:
        with server.client() as http:
            jobs = http.get("/train").json()["jobs"]
        return all(job["status"] not in ("queued", "running") for job in jobs)

    wait_for(probe, JOB_SECONDS, "no job running")


class CountingTransport(httpx.HTTPTransport):
    """A real transport that records each request's method, path and JSON body."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.read()) if request.content else None
        with self.lock:
            self.requests.append((request.method, request.url.path, body))
        return super().handle_request(request)


PROBLEM_JSON = "application/problem+json"


class LocalHTTP:
    """An HTTP server on 127.0.0.1 in a thread of its own; subclasses answer each GET, POST
    and DELETE in :meth:`answer`. A context manager: serves inside the ``with``."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self) -> None:
                owner.answer(self)

            do_GET = do_POST = do_DELETE = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def send_json(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    media_type: str = "application/json",
) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", media_type)
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


class Stub(LocalHTTP):
    """A tiny HTTP server on 127.0.0.1 for what a healthy iris-serve never does.

    ``mode``: ``"hangup"`` reads the request and closes the connection without an answer;
    ``"unavailable"`` answers 503 with ``Retry-After: 0``; ``"old"`` is an older server
    without ``GET /limits`` that predicts setosa for everything.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.hits: list[tuple[str, str]] = []

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        self.hits.append((handler.command, handler.path))
        if self.mode == "hangup":
            handler.close_connection = True
            handler.connection.close()
        elif self.mode == "unavailable":
            busy = problem(503, "not ready: loading")
            send_json(handler, 503, busy, {"Retry-After": "0"}, media_type=PROBLEM_JSON)
        elif handler.path == "/limits":
            send_json(handler, 404, problem(404, "no endpoint at /limits"), media_type=PROBLEM_JSON)
        elif handler.path == "/predict":
            n = len(json.loads(body)["instances"])
            row = {
                "label": "setosa",
                "class_index": 0,
                "probabilities": {"setosa": 1.0, "versicolor": 0.0, "virginica": 0.0},
            }
            send_json(handler, 200, {"model_version": "old", "predictions": [row] * n})
        else:
            missing = problem(404, f"no endpoint at {handler.path}")
            send_json(handler, 404, missing, media_type=PROBLEM_JSON)


def problem(status: int, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": "Problem", "status": status, "detail": detail}
