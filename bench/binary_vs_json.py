"""The Open Inference Protocol's binary tensors against its JSON, on one connection.

``.venv/bin/python bench/binary_vs_json.py [--seconds 4] [--rounds 2]`` starts ``iris-serve``
on a free port of 127.0.0.1 with a fresh data directory and POSTs the same rows to
``/v2/models/iris/infer`` as JSON and in binary (FP64 in, every output in binary), one
request at a time on one kept-alive connection, in alternating rounds, and prints req/s and
the median latency of each, as one Python client sees them. The binary extension's targets
(10,000 rows at least 2x JSON's req/s, one row no slower than JSON) are judged by
``bench/bench_http.py --only grpc``, under wrk; ``bench_http.py`` builds its binary requests
with :func:`binary_request`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.servers import running_server
from model.data import load_iris

PATH = "/v2/models/iris/infer"


def json_request(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "measurements", "shape": list(rows.shape), "datatype": "FP64"}
    return json.dumps({"inputs": [tensor | {"data": rows.tolist()}]}).encode(), {}


def binary_request(rows: np.ndarray) -> tuple[bytes, dict[str, str]]:
    data = rows.astype("<f8").tobytes()
    tensor = {"name": "measurements", "shape": list(rows.shape), "datatype": "FP64"}
    header = {
        "inputs": [tensor | {"parameters": {"binary_data_size": len(data)}}],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def run(port: int, body: bytes, headers: dict[str, str], seconds: float) -> tuple[float, float]:
    """(req/s, median latency in ms) of back-to-back requests for ``seconds``."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        sent = time.perf_counter()
        connection.request("POST", PATH, body, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {answer[:200]!r}")
        latencies.append(time.perf_counter() - sent)
    connection.close()
    return len(latencies) / (time.perf_counter() - started), statistics.median(latencies) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    raw = load_iris().raw
    with (
        tempfile.TemporaryDirectory(prefix="iris-binary-") as tmp,
        running_server(Path(tmp) / "data", Path(tmp) / "server.log") as server,
    ):
        for rows in (1, 10_000):
            picked = raw[np.arange(rows) % len(raw)]
            found: dict[str, list[float]] = {"json": [], "binary": []}
            for round_ in range(args.rounds):
                order = ("json", "binary") if round_ % 2 == 0 else ("binary", "json")
                for kind in order:
                    build = json_request if kind == "json" else binary_request
                    rps, ms = run(server.port, *build(picked), args.seconds)
                    found[kind].append(rps)
                    print(f"{rows:>6} rows {kind:>6}: {rps:8.1f} req/s, median {ms:.3f} ms")
            ratio = statistics.median(found["binary"]) / statistics.median(found["json"])
            print(f"{rows:>6} rows: binary / JSON = {ratio:.2f}x (median req/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
