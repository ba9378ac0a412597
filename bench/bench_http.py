"""HTTP benchmark of the service: `make bench-http` (``python bench/bench_http.py``).

Servers run as separate processes on free ports of 127.0.0.1, each with a fresh
``IRIS_DATA_DIR`` (a temporary directory) and a known ``IRIS_API_TOKEN``, and are always
stopped again. Load comes from ``wrk`` (``-t1``, one thread, so it takes one core of the
machine at most) with ``bench/post.lua``, which POSTs a fixed body and prints req/s and the
latency percentiles as JSON. These machines are shared and noisy, so every comparison is
made within one run, the configurations are interleaved (the order is reversed every other
round), each point is repeated, and the medians are reported with their spread
[min-max]. A target's ratio is the median of the per-round ratios of points measured side
by side.

Sections, in the order they run:

1. Cold start: process start to the first ``/readyz`` 200, with an empty data directory
   (the default model is trained then) and again on the same directory with the model
   stored. One untimed start first, so the interpreter's files are in the page cache.
2. In-process, no HTTP, CPU time: the /predict work split into parse + validation
   (``PredictRequest.model_validate_json``), the array build (``measurements``), the
   route's fast reading of the body (``fast_path``), NumPy (standardise,
   ``forward``, argmax, bincount), the Prometheus counters, and serialisation (the
   prediction dicts and ``orjson.dumps``), the same calls as the route; then set against
   the server's CPU per request over HTTP (from /proc) and the ceiling's. The forward +
   backward pass on 100,000 rows against the memory traffic bound (also with the BLAS at
   one thread). Per-sample gradients against ``torch.func.vmap(grad)`` at torch's default
   threads and at one, the faster of the two counting.
3. HTTP throughput: the ceiling (``bench/ceiling.py``, a raw ASGI app under uvicorn's
   fastest configuration: uvloop, httptools, no access log, no lifespan, no server header),
   the service at its default settings with 1 worker at 1 and 32 connections for 1, 100
   and 1,000 rows, at 1 and 4 for 10,000 rows (at 32, one answer takes seconds and a 5 s
   run counts almost none), with ``IRIS_WORKERS=2`` at 32 connections, and with
   ``IRIS_ACCESS_LOG=true`` at 32 connections where the service has that setting (its
   ``service/config.py`` has ``access_log``; the default is off); the access log's cost per
   request is the difference of server CPU. A point runs long enough for 10 answers per
   connection (at most 20 s).
4. /predict at 8 connections, idle and while a training job runs (``POST /train``,
   ``activate: false`` so the served model stays the same; its epochs are calibrated so that
   it outlasts the measurement), interleaved.
5. The Open Inference Protocol: ours (``/v2/models/iris/infer``, and ``/predict`` on the
   same rows) against MLServer and KServe's model server (``bench/peer_servers.py``: each
   in a virtualenv of its own under ``--scratch``, serving the service's weights through a
   runtime in ``bench/peers/``, one process each; checked to give our answer on 150 rows
   first), one row at 32 connections and 10,000 rows at 1, in interleaved rounds; plus the
   in-process floor of a 10,000-row request (orjson parse, ``np.asarray``, forward pass,
   one ``orjson.dumps``). A peer that cannot be installed or started is skipped with the
   reason (``--no-peers`` skips them all).
6. gRPC and the binary tensors (``grpc``): ours over gRPC (``IRIS_GRPC_PORT``) beside
   MLServer's gRPC on the same weights and beside a bare grpc.aio server that answers a
   constant (``bench/grpc_ceiling.py``), loaded with ``h2load`` (one thread, one connection;
   each call the file ``harness/h2load.py`` writes: one length-prefixed ModelInferRequest
   with raw contents) at 32 streams for one row and 1 stream for 10,000 rows; and
   ``/v2/models/iris/infer`` with binary tensors (``Inference-Header-Content-Length``, FP64
   in, every output in binary; post.lua's header arguments) beside the same path's JSON, one
   row at 32 connections and at 1, 10,000 rows at 1. Every path's answer on 150 rows is
   checked first (gRPC and binary: /v2 JSON's to the bit; MLServer's: to 1e-12). h2load
   cannot read a call's grpc-status, so the DATA bytes it received are held against the
   answer's size. Plus the in-process split of each path (decode, read, predict, answer)
   set against the server's CPU per request under load.
7. Memory: VmRSS of a fresh server (1 worker: the uvicorn process is the server) after
   1,000 one-row requests sent one by one, then under wrk until 100,000; the counts are
   the server's own (``iris_http_requests_total`` for /predict with status 200).

Targets P1-P6, P1v2, P2v2, G1, G2, B1 and B2 (see ``TARGETS``) are printed PASS/MISS with
their figures. ``--quick``: one round of 2 s points (a smoke run; its figures are not the
ones to quote). ``--json PATH`` writes every sample; ``--only SECTIONS`` runs some of them
(cold, inprocess, throughput, training, oip, grpc, memory). The first run with the peers
installs their virtualenvs (a few minutes; about 300 and 410 MiB), later runs reuse them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import http.client
import json
import math
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ceiling
import numpy as np
import peer_servers
from binary_vs_json import binary_request

from harness import h2load
from harness.api import instances, start_job, wait_job
from harness.servers import (
    Launch,
    ServerProcess,
    free_port,
    loadavg,
    rss_kib,
    spinning,
    tree_cpu_seconds,
    uptime,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LUA = BENCH / "post.lua"
ROW_COUNTS = (1, 100, 1_000, 10_000)
CONNECTIONS = (1, 32)
TRAINING_CONNECTIONS = 8
TRAINING_HIDDEN_UNITS = 256
LOAD_PROCESSES = 1  # busy loops beside the server for the loaded training rounds
MEMORY_FIRST = 1_000
P5_ROWS = 100_000
P5_HIDDEN = 16
WRK_TIMEOUT_SECONDS = 30
MAX_POINT_SECONDS = 20
WITH_ACCESS_LOG = "IRIS_ACCESS_LOG=true"
BATCH_CONNECTIONS = {100: (1, 32), 1_000: (1, 32), 10_000: (1, 4)}
"""Connections per batch size; 10,000 rows at 32 connections would take seconds per answer."""
OIP_PATH = "/v2/models/iris/infer"
OIP_ROWS = (1, 10_000)
OIP_CONNECTIONS = (32, 1)
OIP_OUTPUTS = ("probabilities", "class_index", "label")
PEER_TOLERANCE = 1e-12
READY_SECONDS = 60.0
"""Largest |difference| of a peer's probabilities from ours on the same rows."""
DEFAULT_SCRATCH = BENCH / ".scratch"

TARGETS = {
    "P1": "/predict one row, 32 connections, default settings: >= 0.35x the ceiling's req/s",
    "P1v2": f"{OIP_PATH} one row, 32 connections: >= 3x MLServer's and KServe's req/s, "
    ">= 0.8x /predict's",
    "P2v2": "10,000-row inference requests, 1 connection: rows/s >= 2x MLServer's, "
    "p50 below MLServer's",
    "P2": "10,000-row requests: rows/s >= 60x the one-row req/s",
    "P3": "/predict p99 at 8 connections while training <= 1.5x the idle p99",
    "P3 loaded": f"P3 with {LOAD_PROCESSES} busy process beside the server, idle and training",
    "P4": "per-sample gradients (10,000 rows) >= 2x faster than torch.func.vmap(grad)",
    "P5": "forward + backward, 100,000 rows, hidden 16: within 2.5x the memory traffic bound",
    "P6": "RSS after 100,000 requests within 10% of after 1,000; cold start (empty) < 1.5 s",
    "G1": "gRPC ModelInfer one row, 32 streams on one connection: >= 2x MLServer's gRPC req/s",
    "G2": "gRPC ModelInfer 10,000 rows (raw contents), 1 stream: >= 2x MLServer's gRPC req/s",
    "B1": f"{OIP_PATH} binary tensors, 10,000 rows, 1 connection: >= 2x its JSON's req/s",
    "B2": f"{OIP_PATH} binary tensors, one row, at 32 connections and at 1: >= its JSON's req/s",
    "A/B": "with --baseline REF: req/s within 10% of REF's, side by side: /predict and "
    f"{OIP_PATH} one row at 32 connections, 10,000 rows at 1",
}
AB_POINTS = ((1, 32), (10_000, 1))
"""(rows, connections) of the side-by-side points, on /predict and on the protocol's path."""


@dataclass(frozen=True)
class Plan:
    repeats: int
    seconds: int
    warmup: int
    memory_requests: int
    quick: bool


# -- small helpers -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 0) -> str:
    """'median [min-max]' of ``values`` times ``scale``."""
    if not values:
        return "n/a"
    v = [x * scale for x in values]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{median(v):.{digits}f} [{min(v):.{digits}f}-{max(v):.{digits}f}]"


def per_call_seconds(
    fn: Callable[[], object],
    min_seconds: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Seconds per call of ``fn`` by ``clock``, over enough calls to last ``min_seconds``."""
    calls = 1
    while True:
        started = clock()
        for _ in range(calls):
            fn()
        elapsed = clock() - started
        if elapsed >= min_seconds:
            return elapsed / calls
        calls *= 2 if elapsed <= 0 else max(2, math.ceil(1.2 * min_seconds / elapsed))


def request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- request bodies ------------------------------------------------------------------------


def predict_body(rows: int) -> bytes:
    """``rows`` Iris rows (cycled, in order) as a /predict body."""
    from model.data import load_iris

    raw = load_iris().raw
    picked = raw[np.arange(rows) % raw.shape[0]]
    return json.dumps({"instances": instances(picked)}, separators=(",", ":")).encode()


# -- server processes ----------------------------------------------------------------------


def server_process(
    name: str,
    data_dir: Path,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    launch: Callable[[int], Launch] | None = None,
    ready_path: str = "/readyz",
) -> ServerProcess:
    """The launcher of the tests, polling readiness often enough to time a cold start."""
    return ServerProcess(
        data_dir,
        log,
        env,
        name=name,
        command=command,
        launch=launch,
        ready_path=ready_path,
        ready_interval=0.005,
    )


class Servers:
    """Every server the run starts, stopped together on the way out."""

    def __init__(self, workdir: Path, token: str) -> None:
        self.workdir = workdir
        self.token = token
        self.running: dict[str, ServerProcess] = {}
        self.count = 0

    def new(
        self, name: str, workers: int = 1, ceiling_bytes: int | None = None, **extra: str
    ) -> ServerProcess:
        """iris-serve (or, given ``ceiling_bytes``, the ceiling app) with the run's token."""
        self.count += 1
        data_dir = self.workdir / f"{name}-{self.count}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {"IRIS_API_TOKEN": self.token, "IRIS_WORKERS": str(workers)}
        command = None
        if ceiling_bytes is None:
            env |= extra
        else:
            command = [sys.executable, str(BENCH / "ceiling.py")]
            env |= {"CEILING_BODY_BYTES": str(ceiling_bytes)}
        log = self.workdir / f"{name}-{self.count}.log"
        return server_process(name, data_dir, log, env=env, command=command)

    def start(self, server: ServerProcess) -> ServerProcess:
        self.running[server.name] = server
        server.start(READY_SECONDS)
        return server

    def stop(self, name: str) -> None:
        server = self.running.pop(name, None)
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


@contextlib.contextmanager
def servers_in(workdir: Path, token: str) -> Iterator[Servers]:
    servers = Servers(workdir, token)
    try:
        yield servers
    finally:
        servers.stop_all()


# -- wrk -----------------------------------------------------------------------------------


def wrk(
    url: str, body: Path, connections: int, seconds: int, headers: Sequence[str] = ()
) -> dict[str, Any]:
    """One wrk run with post.lua; its done() JSON plus the load average at the end.
    ``headers`` ("Name: value") go with every request (post.lua's arguments after the body)."""
    command = [
        shutil.which("wrk") or "/usr/bin/wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT_SECONDS}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(body),
        *headers,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            result["loadavg"] = loadavg()
            result["error_count"] = sum(result["errors"].values())
            return result
    raise RuntimeError(f"wrk printed no result ({out.returncode}):\n{out.stdout}\n{out.stderr}")


@dataclass(frozen=True)
class Point:
    """One wrk configuration: which server, which body, how many connections, which path."""

    name: str
    server: str
    rows: int
    connections: int
    path: str = "/predict"


def measure(
    point: Point, server: ServerProcess, body: Path, plan: Plan, headers: Sequence[str] = ()
) -> dict[str, Any]:
    """A point loaded by wrk (:func:`timed`)."""
    url = server.url + point.path
    return timed(
        point, server, plan, lambda seconds, _: wrk(url, body, point.connections, seconds, headers)
    )


def timed(
    point: Point, server: ServerProcess, plan: Plan, run: Callable[[int, bool], dict[str, Any]]
) -> dict[str, Any]:
    """Warm-up, then the measured run (``run(seconds, measured)``, the load generator's
    result), long enough for 10 answers per connection (<= 20 s); with the rows per second
    and the server's CPU per request.

    A load generator counts the answers that arrive within its time, so a run that holds
    only a few request times per connection undercounts (the answers in flight at the end
    are lost).
    """
    seconds = plan.seconds
    if plan.warmup:
        warm = run(plan.warmup, False)
        wanted = 10 * point.connections / max(warm["rps"], 1e-3)
        seconds = min(MAX_POINT_SECONDS, max(plan.seconds, math.ceil(wanted)))
    cpu = tree_cpu_seconds(server.pid)
    result = run(seconds, True)
    result["rows_per_s"] = result["rps"] * point.rows
    result["server_cpu_us_per_request"] = (
        (tree_cpu_seconds(server.pid) - cpu) / max(result["requests"], 1) * 1e6
    )
    return result


def show_point(point: Point, result: dict[str, Any]) -> None:
    errors = f"  errors {result['errors']}" if result["error_count"] else ""
    print(
        f"    {point.name:<36} c{point.connections:<3} {result['rps']:>9.1f} req/s  "
        f"p50 {result['p50_us'] / 1e3:7.2f} ms  p99 {result['p99_us'] / 1e3:8.2f} ms  "
        f"{result['seconds']:4.1f} s  load {result['loadavg']}{errors}",
        flush=True,
    )


# -- 1. cold start -------------------------------------------------------------------------


def cold_start(servers: Servers, plan: Plan) -> dict[str, list[float]]:
    print("cold start (process start to /readyz 200)", flush=True)
    warm = servers.new("cold-warmup")
    try:
        warm.start(READY_SECONDS)
    finally:
        warm.stop()
    found: dict[str, list[float]] = {"empty": [], "stored": []}
    for _ in range(max(plan.repeats, 3)):
        server = servers.new("cold")
        for kind in ("empty", "stored"):
            try:
                found[kind].append(server.start(READY_SECONDS).ready_seconds)
            finally:
                server.stop()
            print(f"    {kind:<7} {found[kind][-1]:.3f} s   load {loadavg()}", flush=True)
    return found


# -- 2. in-process -------------------------------------------------------------------------


def default_model(workdir: Path) -> Any:
    """The model a fresh server serves: trained and stored as the server does it."""
    from model.persistence import ModelStore
    from service.registry import ensure_default_model

    store = ModelStore(workdir / "inprocess" / "models")
    ensure_default_model(store, seed=0)
    return store.load_current()


def predict_split(stored: Any, bodies: dict[int, bytes], plan: Plan) -> dict[int, Any]:
    """CPU time per request of each step of /predict, timed apart on the same inputs.

    Each step is the function the route runs (service/routers/predict.py): parse:
    ``service.body.load`` (orjson) and the schema's validation of its document; array:
    ``instance_rows`` (the schema path's array build); fast: :func:`fast_path` (bytes to
    rows, the route's first try); numpy: the inference core's predict (standardise, forward,
    argmax, the per-class counters); serialise: ``predictions_json``, the route's writer.
    One row takes the route's one-row steps where they exist: the core's one-row path and
    ``prediction_json``.
    """
    from service.body import load
    from service.routers.predict import predictions_json

    try:
        from service.native import instance_rows as measurements
    except ImportError:  # older builds
        from service.routers.predict import (  # type: ignore[attr-defined,no-redef]
            instance_rows as measurements,
        )
    from service.schemas import PredictRequest

    print("in-process /predict split (CPU time per request, median of rounds)", flush=True)
    predict = core_predict(stored)
    fast = fast_path()
    split: dict[int, Any] = {}
    one_row = one_row_path(stored)
    for rows, body in bodies.items():
        parsed = load(body).validate(PredictRequest)
        raw = measurements(parsed.instances)
        version, o_s, index = predict(raw)
        steps: dict[str, Callable[[], object]] = {
            "parse": lambda body=body: load(body).validate(PredictRequest),
            "array": lambda parsed=parsed: measurements(parsed.instances),
            "numpy": lambda raw=raw: predict(raw),
            "serialise": lambda v=version, o_s=o_s, i=index: predictions_json(v, o_s, i),
        }
        if rows == 1 and one_row is not None:  # the route's own one-row steps
            row_step, row_writer = one_row
            row = raw[0].tolist()
            _, probabilities, k = row_step(row)
            steps["numpy"] = lambda f=row_step, row=row: f(row)
            steps["serialise"] = lambda w=row_writer, v=version, p=probabilities, k=k: w(v, p, k)
        if fast is not None and fast(body) is not None:
            steps["fast"] = lambda body=body: fast(body)
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(max(3, plan.repeats * 2 + 1)):
            for name, fn in steps.items():
                # CPU time: what the step costs the server, not how long this process
                # waited for a core on a busy machine.
                samples[name].append(
                    per_call_seconds(fn, 0.02 if plan.quick else 0.05, time.process_time)
                )
        step = {name: median(values) for name, values in samples.items()}
        step["counters"] = 0.0  # inside numpy: inference.predict counts its predictions
        step["schema_path"] = sum(step[k] for k in ("parse", "array", "numpy", "serialise"))
        if "fast" in step:
            step["fast_path"] = step["fast"] + step["numpy"] + step["serialise"]
        split[rows] = step | {"samples": samples}
        print(
            f"    {rows:>6} rows: "
            + "  ".join(f"{name} {step[name] * 1e6:.1f}" for name in steps)
            + " us",
            flush=True,
        )
    return split


def core_predict(stored: Any) -> Callable[[Any], Any]:
    """The inference core's prediction of raw rows with ``stored`` as the served model:
    ``Inference.predict``, or in older builds ``inference.predict(registry, ...)``."""
    from types import SimpleNamespace

    from service import inference

    registry: Any = SimpleNamespace(cached=lambda version: stored, active=stored)
    core = getattr(inference, "Inference", None)
    if core is None:
        return lambda raw: inference.predict(registry, raw, None)
    served = core(registry, 10**9, 10**12)
    return lambda raw: served.predict(raw, None)


def one_row_path(stored: Any) -> tuple[Callable[..., Any], Callable[..., bytes]] | None:
    """The one-row steps of /predict, the core's prediction of one row and
    ``prediction_json``, where the build under test has them (older builds ran every size
    through the array path)."""
    from types import SimpleNamespace

    from service import inference
    from service.routers import predict

    writer = getattr(predict, "prediction_json", None)
    if writer is None:
        return None
    if hasattr(inference, "Inference"):
        core = core_predict(stored)
        return (lambda row: core([row])), writer
    registry: Any = SimpleNamespace(cached=lambda version: stored)
    old = getattr(inference, "predict_row", None)
    return None if old is None else ((lambda row: old(registry, row, None)), writer)


def fast_path() -> Callable[[bytes], object] | None:
    """How the route reads a body before its schema, where the build under test has one:
    ``service.native.predict_input`` (msgspec's struct, the schema for what it does not
    read), or in older builds ``service.routers.predict.request_rows`` or
    ``service.body.fast_instances``.

    The split above times the schema's path, which every body can take, and this as an
    extra column.
    """
    try:
        from service.native import predict_input
    except ImportError:
        pass
    else:
        return lambda body: predict_input(body, 100_000)
    try:
        from service.routers.predict import request_rows  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        return lambda body: request_rows(body, 100_000)
    try:
        from service.body import fast_instances  # type: ignore[attr-defined]
    except ImportError:
        return None
    found: Callable[[bytes], object] = fast_instances
    return found


def traffic_bytes(n: int, hidden: int) -> dict[str, int]:
    """Bytes the forward + backward (mean) pass must read and write, by array, float64.

    Forward reads X and writes the four arrays ``Cache`` holds; backward reads X, h_a, h_s,
    o_s and the labels, and writes the per-row derivatives ``Gradients`` holds (do_a, dh_s,
    dh_a, dx). The parameters and their gradients are a few hundred bytes and left out, as
    are the temporaries NumPy makes on the way (the bias additions, the ReLU mask, the
    softmax's row maxima and sums): a fused implementation would not need them.
    """
    f = 8
    reads = {"X (forward)": 4, "X (backward)": 4, "y": 1, "h_a": hidden, "h_s": hidden, "o_s": 3}
    writes = {
        "h_a": hidden,
        "h_s": hidden,
        "o_a": 3,
        "o_s": 3,
        "do_a": 3,
        "dh_s": hidden,
        "dh_a": hidden,
        "dx": 4,
    }
    return {
        "read": sum(reads.values()) * n * f,
        "written": sum(writes.values()) * n * f,
    }


def pass_vs_memory(plan: Plan) -> dict[str, Any]:
    """P5: forward + backward on 100,000 rows against a copy of the same number of bytes."""
    from model.network import backward, forward, init_params

    rng = np.random.default_rng(0)
    from service.tuning import keep_large_allocations

    keep_large_allocations()  # as every server worker and training child does
    params = init_params(P5_HIDDEN, rng)
    X = rng.standard_normal((P5_ROWS, 4))
    y = rng.integers(0, 3, P5_ROWS)
    traffic = traffic_bytes(P5_ROWS, P5_HIDDEN)
    total = traffic["read"] + traffic["written"]
    # A copy of total/2 bytes reads total/2 and writes total/2: the same traffic.
    src = np.ones(total // 2 // 8)
    dst = np.zeros_like(src)

    def full_pass() -> object:
        return backward(params, forward(params, X), y)

    def copy() -> None:
        np.copyto(dst, src)

    full_pass()
    copy()
    passes: list[float] = []
    copies: list[float] = []
    single: list[float] = []
    limit = blas_single_thread()
    for _ in range(9 if plan.quick else 25):
        passes.append(per_call_seconds(full_pass, 0.05))
        copies.append(per_call_seconds(copy, 0.05))
        if limit is not None:
            with limit():
                single.append(per_call_seconds(full_pass, 0.05))
    ratios = [p / c for p, c in zip(passes, copies, strict=True)]
    result = {
        "rows": P5_ROWS,
        "hidden_units": P5_HIDDEN,
        "bytes_read": traffic["read"],
        "bytes_written": traffic["written"],
        "pass_seconds": passes,
        "copy_seconds": copies,
        "copy_gb_per_s": [2 * src.nbytes / c / 1e9 for c in copies],
        "ratios": ratios,
        "pass_seconds_blas_1_thread": single,
        "ratios_blas_1_thread": [p / c for p, c in zip(single, copies, strict=True)],
    }
    print(
        f"forward + backward, {P5_ROWS:,} rows, hidden {P5_HIDDEN}: pass "
        f"{spread(passes, 1e3, 2)} ms; bound: copy of {total / 2 / 1e6:.1f} MB "
        f"({traffic['read'] / 1e6:.1f} MB read + {traffic['written'] / 1e6:.1f} MB written) "
        f"{spread(copies, 1e3, 2)} ms ({spread(result['copy_gb_per_s'], 1, 1)} GB/s); "
        f"ratio {spread(ratios, 1, 2)}x",
        flush=True,
    )
    if single:
        print(
            f"    the same pass with the BLAS limited to 1 thread (threadpoolctl): "
            f"{spread(single, 1e3, 2)} ms, ratio {spread(result['ratios_blas_1_thread'], 1, 2)}x",
            flush=True,
        )
    return result


def blas_single_thread() -> Callable[[], contextlib.AbstractContextManager[object]] | None:
    """A context that limits the BLAS to one thread, when threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return lambda: threadpool_limits(limits=1, user_api="blas")


def gradients_vs_torch(stored: Any, plan: Plan) -> dict[str, Any]:
    """P4: per-sample gradients, model.network against torch.func.vmap(grad), float64."""
    from model.data import load_iris
    from model.network import Params, backward, forward, init_params

    try:
        import torch
    except ImportError as error:
        print(f"per-sample gradients: skipped, PyTorch is not importable ({error})", flush=True)
        return {"skipped": f"torch not importable: {error}"}
    from torch.func import grad, vmap

    data = load_iris()
    n = 10_000
    pick = np.arange(n) % data.raw.shape[0]
    X = stored.model.standardizer.transform(data.raw[pick])
    y = data.y[pick].astype(np.int64)
    models = {
        f"served model (hidden {stored.model.params.hidden_units})": stored.model.params,
        "hidden 16": init_params(16, np.random.default_rng(0)),
    }
    result: dict[str, Any] = {
        "rows": n,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    print(
        f"per-sample gradients, {n:,} rows, reduction none, float64 (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        flush=True,
    )
    for name, params in models.items():
        tp = {k: torch.from_numpy(v.copy()) for k, v in params.arrays().items()}
        tX = torch.from_numpy(X.copy())
        ty = torch.from_numpy(y.copy())

        def sample_loss(p: dict[str, Any], x: Any, label: Any) -> Any:
            h_s = torch.relu(x @ p["W1"].T + p["b1"])
            o_a = h_s @ p["W2"].T + p["b2"]
            return torch.nn.functional.cross_entropy(o_a.unsqueeze(0), label.unsqueeze(0))

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))

        def ours(params: Params = params) -> Params:
            return backward(params, forward(params, X), y, "none").params

        def theirs(
            tp: dict[str, Any] = tp, tX: Any = tX, ty: Any = ty, per_sample: Any = per_sample
        ) -> Any:
            return per_sample(tp, tX, ty)

        mine, other = ours(), theirs()
        worst = max(float(np.max(np.abs(getattr(mine, k) - other[k].numpy()))) for k in other)
        if worst > 1e-10:
            raise RuntimeError(f"{name}: torch and model.network differ by {worst:g}")
        ours_s: list[float] = []
        torch_s: list[float] = []
        torch_1: list[float] = []
        threads = torch.get_num_threads()
        for _ in range(5 if plan.quick else 15):
            ours_s.append(per_call_seconds(ours, 0.05))
            torch_s.append(per_call_seconds(theirs, 0.05))
            # One intra-op thread too: on a busy 2-core machine torch's OpenMP threads can
            # be many times slower than one, and the target is against torch at its best.
            torch.set_num_threads(1)
            try:
                torch_1.append(per_call_seconds(theirs, 0.05))
            finally:
                torch.set_num_threads(threads)
        best = [min(a, b) for a, b in zip(torch_s, torch_1, strict=True)]
        speedups = [t / o for o, t in zip(ours_s, best, strict=True)]
        result[name] = {
            "ours_seconds": ours_s,
            "torch_seconds": torch_s,
            "torch_1_thread_seconds": torch_1,
            "torch_best_seconds": best,
            "speedups": speedups,
            "max_abs_difference": worst,
        }
        print(
            f"    {name:<26} ours {spread(ours_s, 1e3, 2)} ms  torch vmap(grad) "
            f"{spread(torch_s, 1e3, 2)} ms ({threads} threads), "
            f"{spread(torch_1, 1e3, 2)} ms (1 thread)  speed-up over the faster "
            f"{spread(speedups, 1, 2)}x  (max |difference| {worst:.1e})",
            flush=True,
        )
    return result


# -- 3. HTTP throughput --------------------------------------------------------------------


def throughput(
    servers: dict[str, ServerProcess], bodies: dict[int, Path], plan: Plan
) -> tuple[list[Point], dict[str, list[dict[str, Any]]]]:
    points = []
    for connections in CONNECTIONS:
        points.append(Point("ceiling (raw ASGI)", "ceiling", 1, connections))
        points.append(Point("service, 1 row", "service", 1, connections))
    points.append(Point("service IRIS_WORKERS=2, 1 row", "service2", 1, 32))
    if "service_log" in servers:
        points.append(Point(f"service {WITH_ACCESS_LOG}, 1 row", "service_log", 1, 32))
    for rows in ROW_COUNTS[1:]:
        for connections in BATCH_CONNECTIONS[rows]:
            points.append(Point(f"service, {rows:,} rows", "service", rows, connections))
    results: dict[str, list[dict[str, Any]]] = {key(p): [] for p in points}
    for round_ in range(plan.repeats):
        print(f"  round {round_ + 1}/{plan.repeats}", flush=True)
        for point in points if round_ % 2 == 0 else reversed(points):
            result = measure(point, servers[point.server], bodies[point.rows], plan)
            results[key(point)].append(result)
            show_point(point, result)
    return points, results


def key(point: Point) -> str:
    return f"{point.name} c{point.connections}"


def has_access_log_setting() -> bool:
    """Whether this service has the ``IRIS_ACCESS_LOG`` setting (``access_log`` in config)."""
    config = (ROOT / "service" / "config.py").read_text()
    return re.search(r"^\s*access_log\b", config, re.MULTILINE) is not None


# -- 5. the Open Inference Protocol, ours and the peers' -----------------------------------


def oip_body(rows: int) -> bytes:
    """``rows`` Iris rows (cycled, in order) as an inference request: one flat FP64 tensor."""
    from model.data import load_iris

    raw = load_iris().raw
    picked = raw[np.arange(rows) % raw.shape[0]]
    tensor = {
        "name": "measurements",
        "shape": [rows, 4],
        "datatype": "FP64",
        "data": picked.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()


def oip_outputs(server: ServerProcess, body: bytes) -> dict[str, dict[str, Any]]:
    """The outputs, by name, of ``server``'s answer to one inference request."""
    status, answer = request(
        server.port, "POST", OIP_PATH, body=body, headers={"Content-Type": "application/json"}
    )
    if status != 200:
        raise RuntimeError(f"{server.name}: {OIP_PATH} answered {status}: {answer[:300]!r}")
    return {output["name"]: output for output in json.loads(answer)["outputs"]}


def answer_difference(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[float, str | None]:
    """Largest |difference| of the probabilities, and what else differs (None: nothing)."""
    for name in OIP_OUTPUTS:
        if name not in theirs:
            return math.inf, f"no output {name!r}"
        if theirs[name]["shape"] != ours[name]["shape"]:
            return math.inf, f"{name} has shape {theirs[name]['shape']}, ours {ours[name]['shape']}"
        if theirs[name]["datatype"] != ours[name]["datatype"]:
            return math.inf, f"{name} is {theirs[name]['datatype']}, ours {ours[name]['datatype']}"
    for name in ("class_index", "label"):
        if theirs[name]["data"] != ours[name]["data"]:
            return math.inf, f"{name} differs"
    worst = float(
        np.max(np.abs(np.array(theirs["probabilities"]["data"]) - ours["probabilities"]["data"]))
    )
    return worst, None if worst <= PEER_TOLERANCE else f"probabilities differ by {worst:.2e}"


def start_peers(
    servers: Servers,
    service: ServerProcess,
    workdir: Path,
    scratch: Path,
    mlserver_workers: int,
    *,
    names: Sequence[str] | None = None,
) -> tuple[dict[str, ServerProcess], dict[str, Any]]:
    """The peers (those ``names``, default all) that install, start and answer like the
    service; the rest with a reason."""
    from peer_servers import LAUNCHERS, PEERS, describe, ensure_venvs, export_weights

    chosen = tuple(peer for peer in PEERS if names is None or peer.name in names)
    started = time.perf_counter()
    venvs = ensure_venvs(scratch, lambda line: print(line, flush=True), chosen)
    info: dict[str, Any] = {"venv_seconds": time.perf_counter() - started}
    weights = workdir / "peers" / "weights.npz"
    info["model_version"] = export_weights(service.data_dir, weights)
    check = oip_body(150)
    ours = oip_outputs(service, check)
    running: dict[str, ServerProcess] = {}
    for peer in chosen:
        venv = venvs[peer.name]
        if not isinstance(venv, peer_servers.Venv):
            info[peer.name] = {"skipped": str(venv)}
            print(f"  peers: {peer.name} skipped ({venv})", flush=True)
            continue
        found = info[peer.name] = describe(venv)
        options = {"parallel_workers": mlserver_workers} if peer.name == "MLServer" else {}
        found["options"] = options
        launch = LAUNCHERS[peer.name](venv, weights, workdir / "peers" / peer.name, **options)
        server = server_process(
            peer.name,
            workdir / "peers" / peer.name,
            workdir / f"peer-{peer.name}.log",
            launch=launch,
            ready_path=peer.ready_path,
        )
        try:
            servers.running[server.name] = server  # stopped with the rest, whatever happens
            found["start_seconds"] = server.start(READY_SECONDS).ready_seconds
            worst, problem = answer_difference(ours, oip_outputs(server, check))
        except (
            AssertionError,
            RuntimeError,
            OSError,
            http.client.HTTPException,
            ValueError,
            KeyError,
        ) as error:
            servers.stop(peer.name)
            found["skipped"] = f"{error}"[:500]
            print(f"  peers: {peer.name} skipped ({found['skipped']})", flush=True)
            continue
        found["max_abs_probability_difference"] = worst
        if problem is not None:
            servers.stop(peer.name)
            found["skipped"] = f"answers differ from ours on 150 rows: {problem}"
            print(f"  peers: {peer.name} skipped ({found['skipped']})", flush=True)
            continue
        running[peer.name] = server
        versions = ", ".join(f"{k} {v}" for k, v in venv.versions.items())
        print(
            f"  {peer.name}: {versions}; venv {found['size_mib']:.0f} MiB, installed in "
            f"{venv.install_seconds:.0f} s{' (now)' if venv.installed_now else ' (cached)'}; "
            f"ready in {found['start_seconds']:.1f} s; same answer as ours on 150 rows "
            f"(max |probability difference| {worst:.1e})",
            flush=True,
        )
    return running, info


def oip_floor(plan: Plan, workdir: Path) -> dict[str, float]:
    """The least a 10,000-row inference request can cost in-process, step by step (CPU).

    orjson's parse of the body, one ``np.asarray`` of the flat tensor, the forward pass with
    argmax and labels, and one ``orjson.dumps`` of the three outputs (NumPy arrays passed
    to orjson as they are). No validation at all: the floor the service's /v2 sits above.
    """
    import orjson

    from model.data import CLASSES
    from model.network import predict_proba

    rows = OIP_ROWS[-1]
    body = oip_body(rows)
    model = default_model(workdir / "oip-floor").model
    parsed = orjson.loads(body)
    data = parsed["inputs"][0]["data"]
    raw = np.asarray(data, dtype=np.float64).reshape(rows, 4)
    o_s = predict_proba(model, raw)
    index = o_s.argmax(axis=1)
    labels = [CLASSES[k] for k in index.tolist()]

    def forward_part() -> object:
        o_s = predict_proba(model, raw)
        index = o_s.argmax(axis=1)
        return [CLASSES[k] for k in index.tolist()]

    def serialise() -> bytes:
        outputs = [
            {"name": "probabilities", "datatype": "FP64", "shape": [rows, 3], "data": o_s.ravel()},
            {"name": "class_index", "datatype": "INT64", "shape": [rows], "data": index},
            {"name": "label", "datatype": "BYTES", "shape": [rows], "data": labels},
        ]
        answer = {"model_name": "iris", "model_version": "v", "outputs": outputs}
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)

    steps: dict[str, Callable[[], object]] = {
        "parse": lambda: orjson.loads(body),
        "asarray": lambda: np.asarray(data, dtype=np.float64).reshape(rows, 4),
        "forward": forward_part,
        "serialise": serialise,
    }
    floor = step_medians(steps, plan)
    floor["sum"] = sum(floor.values())
    print(
        f"  in-process floor of a {rows:,}-row inference request (CPU us): "
        + "  ".join(f"{name} {value * 1e6:,.0f}" for name, value in floor.items()),
        flush=True,
    )
    own = oip_route_steps(body, model, plan)
    if own:
        floor |= {f"route_{name}": value for name, value in own.items()}
        print(
            "  the route's own steps on the same request (CPU us): "
            + "  ".join(f"{name} {value * 1e6:,.0f}" for name, value in own.items()),
            flush=True,
        )
    return floor


def step_medians(steps: dict[str, Callable[[], object]], plan: Plan) -> dict[str, float]:
    """The median CPU seconds per call of each step, the steps taken in turn each round."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(max(3, plan.repeats * 2 + 1)):
        for name, fn in steps.items():
            samples[name].append(per_call_seconds(fn, 0.05, time.process_time))
    return {name: median(values) for name, values in samples.items()}


def oip_route_steps(body: bytes, model: Any, plan: Plan) -> dict[str, float]:
    """What ``/v2/models/iris/infer`` itself spends on ``body``, step by step (CPU), where the
    build has these functions: ``request_input`` (the body to a float64 array; in older
    builds ``fast_request``), the forward pass with argmax and labels, and ``answer_json``;
    empty for older builds still."""
    try:
        from service.v2.routes import _LABELS, answer_json, outputs_data
    except ImportError:
        return {}
    try:
        from service.v2.decode import request_input as fast_request
    except ImportError:
        try:
            from service.v2.tensors import fast_request  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return {}
    from model.network import predict_proba

    read = fast_request(body, OIP_ROWS[-1])
    if read is None:
        return {}
    raw, names = read[0], read[1]  # (rows, outputs, ...): three fields in older builds, four now
    o_s = predict_proba(model, np.asarray(raw))
    data = outputs_data(o_s, o_s.argmax(axis=1))

    def forward() -> object:
        o_s = predict_proba(model, np.asarray(raw))
        return _LABELS[o_s.argmax(axis=1)].tolist()

    steps: dict[str, Callable[[], object]] = {
        "read": lambda: fast_request(body, OIP_ROWS[-1]),
        "forward": forward,
        "answer": lambda: answer_json("v", None, names, len(raw), data),
    }
    own = step_medians(steps, plan)
    own["sum"] = sum(own.values())
    return own


def oip(
    servers: Servers,
    plan: Plan,
    workdir: Path,
    scratch: Path,
    *,
    with_peers: bool,
    mlserver_workers: int = 0,
) -> dict[str, Any]:
    """Ours (/v2 and /predict) and the peers on the same weights, interleaved rounds."""
    bodies: dict[tuple[str, int], Path] = {}
    for rows in OIP_ROWS:
        bodies[OIP_PATH, rows] = workdir / f"oip-{rows}.json"
        bodies[OIP_PATH, rows].write_bytes(oip_body(rows))
        bodies["/predict", rows] = workdir / f"predict-oip-{rows}.json"
        bodies["/predict", rows].write_bytes(predict_body(rows))
    result: dict[str, Any] = {"floor": oip_floor(plan, workdir)}
    service = servers.start(servers.new("oip-service"))
    running = {"service": service}
    if with_peers:
        peers, result["peers"] = start_peers(servers, service, workdir, scratch, mlserver_workers)
        running |= peers
    else:
        result["peers"] = {"skipped": "--no-peers"}
        print("  peers: skipped (--no-peers)", flush=True)
    points = []
    for rows, connections in zip(OIP_ROWS, OIP_CONNECTIONS, strict=True):
        label = "1 row" if rows == 1 else f"{rows:,} rows"
        points.append(Point(f"ours {OIP_PATH}, {label}", "service", rows, connections, OIP_PATH))
        points.append(Point(f"ours /predict, {label}", "service", rows, connections))
        for name in [name for name in running if name != "service"]:
            points.append(Point(f"{name}, {label}", name, rows, connections, OIP_PATH))
    results: dict[str, list[dict[str, Any]]] = {key(p): [] for p in points}
    for round_ in range(plan.repeats):
        print(f"  round {round_ + 1}/{plan.repeats}", flush=True)
        for point in points if round_ % 2 == 0 else reversed(points):
            body = bodies[point.path, point.rows]
            found = measure(point, running[point.server], body, plan)
            results[key(point)].append(found)
            show_point(point, found)
    for name in list(running):
        servers.stop(running[name].name)
    result["points"] = [asdict(p) for p in points]
    result["results"] = results
    return result


# -- 7. gRPC and the binary tensors, ours beside MLServer's gRPC -----------------------------

GRPC_POINTS = ((1, 32), (10_000, 1))
"""(rows, streams in flight on one HTTP/2 connection) of the gRPC points, ours and MLServer's."""
BINARY_POINTS = ((1, 32), (1, 1), (10_000, 1))
"""(rows, connections) of the /v2 points, JSON and binary tensors."""
GRPC_CHECK_ROWS = 150
H2LOAD_TIMEOUT_SECONDS = 60


def rows_label(rows: int) -> str:
    return "1 row" if rows == 1 else f"{rows:,} rows"


def iris_rows(rows: int) -> Any:
    """``rows`` Iris rows (cycled, in order), (rows, 4) float64."""
    from model.data import load_iris

    raw = load_iris().raw
    return raw[np.arange(rows) % raw.shape[0]]


def grpc_message(rows: int) -> bytes:
    """``rows`` Iris rows as a serialised ModelInferRequest with raw contents, as
    tritonclient.grpc sends them (the service's generated messages)."""
    from service.rpc import inference_pb2 as pb

    request = h2load.model_infer_request(pb.ModelInferRequest, iris_rows(rows))
    message: bytes = request.SerializeToString()
    return message


def binary_headers(headers: dict[str, str]) -> tuple[str, ...]:
    """post.lua's header arguments for a binary-tensor request."""
    given = {"Content-Type": "application/octet-stream"} | headers
    return tuple(f"{name}: {value}" for name, value in given.items())


def grpc_call(address: str, message: bytes, timeout: float = 30.0) -> bytes:
    """The serialised answer of one ModelInfer call (a fresh channel; bytes both ways)."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        answer: bytes = channel.unary_unary(h2load.MODEL_INFER)(message, timeout=timeout)
    return answer


def tensor_values(datatype: str, shape: list[int], blob: bytes) -> Any:
    """An output's binary data as an array (FP64, INT64) or a list of strings (BYTES)."""
    if datatype == "FP64":
        return np.frombuffer(blob, "<f8").reshape(shape)
    if datatype == "INT64":
        return np.frombuffer(blob, "<i8").reshape(shape)
    if datatype != "BYTES":
        raise ValueError(f"unexpected datatype {datatype!r}")
    labels, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "little")
        labels.append(blob[at + 4 : at + 4 + size].decode())
        at += 4 + size
    return labels


def grpc_outputs(answer: bytes) -> dict[str, Any]:
    """The outputs, by name, of a serialised ModelInferResponse with raw contents."""
    from service.rpc import inference_pb2 as pb

    message = pb.ModelInferResponse.FromString(answer)
    return {
        output.name: tensor_values(output.datatype, list(output.shape), blob)
        for output, blob in zip(message.outputs, message.raw_output_contents, strict=True)
    }


def binary_outputs(port: int, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The outputs, by name, of the service's answer to one binary-tensor request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", OIP_PATH, body, headers)
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"binary {OIP_PATH} answered {response.status}: {answer[:300]!r}")
    size = int(response.getheader("Inference-Header-Content-Length") or 0)
    at, found = size, {}
    for output in json.loads(answer[:size])["outputs"]:
        end = at + output["parameters"]["binary_data_size"]
        found[output["name"]] = tensor_values(output["datatype"], output["shape"], answer[at:end])
        at = end
    return found


def json_outputs(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """oip_outputs()'s JSON outputs as grpc_outputs() gives them."""
    return {
        "probabilities": np.array(outputs["probabilities"]["data"]).reshape(
            outputs["probabilities"]["shape"]
        ),
        "class_index": np.array(outputs["class_index"]["data"]),
        "label": outputs["label"]["data"],
    }


def outputs_differ(ours: dict[str, Any], theirs: dict[str, Any], tolerance: float) -> str | None:
    """What differs between two sets of outputs (probabilities within ``tolerance``)."""
    for name in OIP_OUTPUTS:
        if name not in theirs:
            return f"no output {name!r}"
    if np.shape(theirs["probabilities"]) != np.shape(ours["probabilities"]):
        return f"probabilities of shape {np.shape(theirs['probabilities'])}"
    if list(theirs["class_index"]) != list(ours["class_index"]):
        return "class_index differs"
    if list(theirs["label"]) != list(ours["label"]):
        return "label differs"
    worst = float(np.max(np.abs(theirs["probabilities"] - ours["probabilities"])))
    return None if worst <= tolerance else f"probabilities differ by {worst:.2e}"


def h2load_run(
    address: str, body: Path, streams: int, seconds: int, log: Path | None = None
) -> Any:
    """One h2load run (one thread, one connection, ``streams`` calls in flight): its summary."""
    command = h2load.command(
        shutil.which("h2load") or "/usr/bin/h2load",
        body,
        address,
        streams=streams,
        seconds=seconds,
        log_file=log,
    )
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + H2LOAD_TIMEOUT_SECONDS,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return h2load.summary(out.stdout)


def measure_grpc(
    point: Point,
    server: ServerProcess,
    address: str,
    body: Path,
    *,
    answer_bytes: int,
    plan: Plan,
) -> dict[str, Any]:
    """:func:`measure` with h2load: warm-up, then the measured run, long enough for 10
    answers per stream; latencies from h2load's per-call log. h2load cannot read a call's
    grpc-status (a trailer), so the DATA bytes it received are held against the size of one
    answer (``answer_bytes``, framed): the calls they fall short of are counted as errors
    (``not_answered``)."""
    log = body.with_name(f"{body.stem}-{point.server}.log")

    def run(seconds: int, measured: bool) -> dict[str, Any]:
        return h2load_run(address, body, point.connections, seconds, log if measured else None)

    result = timed(point, server, plan, run)
    result |= h2load.percentiles_us(h2load.latencies_us(log))
    log.unlink()
    result["loadavg"] = loadavg()
    result["answer_bytes"] = answer_bytes
    result["errors"] = {
        "failed": result["failed"],
        "errored": result["errored"],
        "timeout": result["timeout"],
        "not_answered": max(0, result["requests"] - result["data_bytes"] // answer_bytes),
    }
    result["error_count"] = sum(result["errors"].values())
    return result


def wire_steps(rows: int, state: Any) -> dict[str, dict[str, Callable[[], object]]]:
    """The steps of one inference request of ``rows`` rows on each path, as the service
    runs them for a client sending it again: /v2 JSON (``request_input``, the core's
    predict, the whole of ``infer_answer``), /v2 binary (``split_binary`` first; its JSON
    remembered) and gRPC (protobuf's parse, ``request_rows``, the core's predict, the whole
    of ``infer``: its answer serialised; a one-row message remembered, read without
    protobuf)."""
    from service.rpc import inference_pb2 as pb
    from service.rpc import wire
    from service.rpc.server import infer, infer_known, request_rows
    from service.v2 import known
    from service.v2.decode import request_input, split_binary
    from service.v2.routes import infer_answer

    core, limit = state.inference, state.inference.max_instances
    json_body = oip_body(rows)
    json_rows = request_input(json_body, limit).rows
    body, headers = binary_request(iris_rows(rows))
    head = headers["Inference-Header-Content-Length"]
    json_part, binary = split_binary(body, head)
    binary_rows = known.request_input(json_part, limit, binary).rows
    message = grpc_message(rows)
    request = pb.ModelInferRequest.FromString(message)
    grpc_rows = request_rows(request, limit)
    infer(state, request, None, message)  # a one-row message is remembered
    grpc: dict[str, Callable[[], object]] = {
        "decode": lambda: pb.ModelInferRequest.FromString(message),
        "read": lambda: request_rows(request, limit),
        "predict": lambda: core.predict(grpc_rows, None),
        "route": lambda: infer(state, request),
    }
    if wire.known_row(message) is not None:
        grpc = {
            "read": lambda: wire.known_row(message),
            "predict": lambda: core.predict(grpc_rows, None),
            "route": lambda: infer_known(state, *wire.known_row(message)),
        }
    return {
        "/v2 JSON": {
            "read": lambda: request_input(json_body, limit),
            "predict": lambda: core.predict(json_rows, None),
            "route": lambda: infer_answer(state, json_body, None),
        },
        "/v2 binary": {
            "decode": lambda: split_binary(body, head),
            "read": lambda: known.request_input(json_part, limit, binary),
            "predict": lambda: core.predict(binary_rows, None),
            "route": lambda: infer_answer(state, json_part, None, binary),
        },
        "gRPC": grpc,
    }


def wire_split(plan: Plan, workdir: Path) -> dict[str, Any]:
    """Where an inference request's CPU goes in-process, by path (/v2 JSON, /v2 binary,
    gRPC) for 1 and 10,000 rows: decode (the binary split; protobuf's parse), read (the
    request to rows, checked), predict (the inference core, as ``Inference`` with no
    rollout: the server's also keeps the rollout's tallies, which fall in the rest), answer
    (the rest of the
    route's function: the route's whole less read and predict, gRPC's answer serialised);
    each the median CPU time of rounds, the steps timed apart in turn."""
    from types import SimpleNamespace

    from service.inference import Inference

    stored = default_model(workdir / "wire-split")
    registry: Any = SimpleNamespace(cached=lambda version: stored, active=stored)
    state: Any = SimpleNamespace(inference=Inference(registry, OIP_ROWS[-1], 10**12))
    print("  in-process: where an inference request's CPU goes (us, median of rounds)")
    split: dict[str, Any] = {}
    for rows in OIP_ROWS:
        try:
            paths = wire_steps(rows, state)
        except ImportError as error:  # a build without these functions
            print(f"    skipped ({error})", flush=True)
            return {"skipped": str(error)}
        for path, steps in paths.items():
            found = step_medians(steps, plan)
            found["answer"] = found["route"] - found["read"] - found["predict"]
            found["total"] = found.get("decode", 0.0) + found["route"]
            split[f"{path}, {rows_label(rows)}"] = found
            print(
                f"    {path}, {rows_label(rows)}: "
                + "  ".join(f"{name} {value * 1e6:,.1f}" for name, value in found.items()),
                flush=True,
            )
    return split


def start_grpc_peer(
    servers: Servers,
    service: ServerProcess,
    workdir: Path,
    scratch: Path,
    mlserver_workers: int,
    *,
    check: tuple[bytes, dict[str, Any]],
) -> tuple[ServerProcess | None, str, dict[str, Any]]:
    """MLServer, installed, started and checked over HTTP (start_peers), then over gRPC: its
    raw answer to ``check`` (a message) against ``check``'s outputs. (server, its gRPC
    address, what was found); no server with a reason when any of that fails."""
    peers, info = start_peers(
        servers, service, workdir, scratch, mlserver_workers, names=(peer_servers.MLSERVER.name,)
    )
    server = peers.get(peer_servers.MLSERVER.name)
    if server is None:
        return None, "", info
    found = info[peer_servers.MLSERVER.name]
    address = f"127.0.0.1:{getattr(server.launch, 'grpc_port', None)}"
    message, ours = check
    try:
        problem = outputs_differ(ours, grpc_outputs(grpc_call(address, message)), PEER_TOLERANCE)
    except Exception as error:  # grpc.RpcError and anything a wrong answer raises
        problem = f"{type(error).__name__}: {error}"[:500]
    if problem is not None:
        servers.stop(server.name)
        found["skipped"] = f"gRPC: {problem}"
        print(f"  peers: MLServer's gRPC skipped ({found['skipped']})", flush=True)
        return None, "", info
    found["grpc_address"] = address
    print(f"  MLServer gRPC on {address}: the same raw answer as ours on 150 rows", flush=True)
    return server, address, info


GRPC_CEILING = "grpc-ceiling"
GRPC_CEILING_NAME = "ceiling (bare grpc.aio)"


def start_grpc_ceiling(servers: Servers, workdir: Path, answer: bytes) -> tuple[ServerProcess, str]:
    """``bench/grpc_ceiling.py`` answering every call with ``answer``; the server and its
    gRPC address."""
    from grpc_ceiling import ANSWER_FILE_ENV

    answer_file = workdir / "grpc-ceiling-answer.bin"
    answer_file.write_bytes(answer)
    port = free_port()
    (workdir / GRPC_CEILING).mkdir(exist_ok=True)
    server = server_process(
        GRPC_CEILING,
        workdir / GRPC_CEILING,
        workdir / f"{GRPC_CEILING}.log",
        env={"IRIS_GRPC_PORT": str(port), ANSWER_FILE_ENV: str(answer_file)},
        command=[sys.executable, str(BENCH / "grpc_ceiling.py")],
        ready_path="/",
    )
    servers.start(server)
    address = f"127.0.0.1:{port}"
    if grpc_call(address, b"") != answer:
        raise RuntimeError("the gRPC ceiling does not answer its constant")
    return server, address


def grpc_binary(
    servers: Servers,
    plan: Plan,
    workdir: Path,
    scratch: Path,
    *,
    with_peers: bool,
    mlserver_workers: int = 0,
) -> dict[str, Any]:
    """Ours over gRPC beside MLServer's gRPC and the bare grpc.aio ceiling (h2load), and /v2
    binary beside /v2 JSON (wrk), in interleaved rounds; the in-process split of each path
    first."""
    result: dict[str, Any] = {"split": wire_split(plan, workdir)}
    grpc_port = free_port()
    service = servers.start(servers.new("grpc-service", IRIS_GRPC_PORT=str(grpc_port)))
    addresses = {"service": f"127.0.0.1:{grpc_port}"}
    running = {"service": service}
    # Every path's answer on 150 rows is the /v2 JSON answer, to the bit.
    reference = json_outputs(oip_outputs(service, oip_body(GRPC_CHECK_ROWS)))
    check = grpc_message(GRPC_CHECK_ROWS)
    body, headers = binary_request(iris_rows(GRPC_CHECK_ROWS))
    answers: dict[str, Callable[[], dict[str, Any]]] = {
        "gRPC": lambda: grpc_outputs(grpc_call(addresses["service"], check)),
        "/v2 binary": lambda: binary_outputs(service.port, body, headers),
    }
    for path, outputs in answers.items():
        problem = outputs_differ(reference, outputs(), 0.0)
        if problem is not None:
            raise RuntimeError(f"our {path} answer on 150 rows is not /v2 JSON's: {problem}")
    if with_peers:
        peer, address, result["peers"] = start_grpc_peer(
            servers, service, workdir, scratch, mlserver_workers, check=(check, reference)
        )
        if peer is not None:
            running[peer.name] = peer
            addresses[peer.name] = address
    else:
        result["peers"] = {"skipped": "--no-peers"}
        print("  peers: skipped (--no-peers)", flush=True)
    ceiling, addresses[GRPC_CEILING] = start_grpc_ceiling(
        servers, workdir, grpc_call(addresses["service"], grpc_message(1))
    )
    running[GRPC_CEILING] = ceiling
    loads: dict[str, Callable[[], dict[str, Any]]] = {}
    points: list[Point] = []
    answer_bytes: dict[str, int] = {}
    for rows, streams in GRPC_POINTS:
        message = grpc_message(rows)
        call = h2load.write_call(workdir / f"grpc-{rows}.bin", message)
        for name, server in running.items():
            if name == GRPC_CEILING and rows != 1:
                continue  # its answer is the one-row answer
            who = {"service": "ours gRPC", GRPC_CEILING: GRPC_CEILING_NAME}.get(
                name, f"{name} gRPC"
            )
            point = Point(f"{who}, {rows_label(rows)}", name, rows, streams, h2load.MODEL_INFER)
            size = len(h2load.framed(grpc_call(addresses[name], message)))
            answer_bytes[key(point)] = size
            loads[key(point)] = functools.partial(
                measure_grpc, point, server, addresses[name], call, answer_bytes=size, plan=plan
            )
            points.append(point)
    for rows, connections in BINARY_POINTS:
        request_body, request_headers = binary_request(iris_rows(rows))
        files = {
            "JSON": (workdir / f"v2-json-{rows}.json", oip_body(rows), ()),
            "binary": (
                workdir / f"v2-binary-{rows}.bin",
                request_body,
                binary_headers(request_headers),
            ),
        }
        for kind, (file, data, extra) in files.items():
            file.write_bytes(data)
            point = Point(
                f"ours /v2 {kind}, {rows_label(rows)}", "service", rows, connections, OIP_PATH
            )
            loads[key(point)] = functools.partial(measure, point, service, file, plan, extra)
            points.append(point)
    results: dict[str, list[dict[str, Any]]] = {key(p): [] for p in points}
    for round_ in range(plan.repeats):
        print(f"  round {round_ + 1}/{plan.repeats}", flush=True)
        for point in points if round_ % 2 == 0 else reversed(points):
            found = loads[key(point)]()
            results[key(point)].append(found)
            show_point(point, found)
    for server in running.values():
        servers.stop(server.name)
    result["answer_bytes"] = answer_bytes
    result["points"] = [asdict(p) for p in points]
    result["results"] = results
    return result


GRPC_TARGETS = (
    ("G1", "gRPC 1 row, 32 streams", "ours gRPC, 1 row c32", "MLServer gRPC, 1 row c32", 2.0),
    (
        "G2",
        "gRPC 10,000 rows (raw), 1 stream",
        "ours gRPC, 10,000 rows c1",
        "MLServer gRPC, 10,000 rows c1",
        2.0,
    ),
    (
        "B1",
        "/v2 binary 10,000 rows, 1 conn.",
        "ours /v2 binary, 10,000 rows c1",
        "ours /v2 JSON, 10,000 rows c1",
        2.0,
    ),
    (
        "B2",
        "/v2 binary 1 row, 32 conns",
        "ours /v2 binary, 1 row c32",
        "ours /v2 JSON, 1 row c32",
        1.0,
    ),
    (
        "B2",
        "/v2 binary 1 row, 1 conn.",
        "ours /v2 binary, 1 row c1",
        "ours /v2 JSON, 1 row c1",
        1.0,
    ),
)
"""(target, what, ours, the reference, the least ratio of req/s): B2 is judged at both points."""


def grpc_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target's comparison: req/s of ours and the reference, per-round ratios, verdict."""
    results: dict[str, list[dict[str, Any]]] = section["results"]
    found = []
    for target, what, ours, reference, bar in GRPC_TARGETS:
        row: dict[str, Any] = {"target": target, "what": what, "bar": bar, "reference": reference}
        if ours not in results or reference not in results:
            found.append(row | {"ok": None, "ratios": []})
            continue
        ratios = paired(results[ours], results[reference], lambda a, b: a["rps"] / b["rps"])
        errors = sum(r["error_count"] for r in results[ours] + results[reference])
        found.append(
            row
            | {
                "ours_rps": [r["rps"] for r in results[ours]],
                "reference_rps": [r["rps"] for r in results[reference]],
                "ratios": ratios,
                "errors": errors,
                "ok": median(ratios) >= bar and errors == 0,
            }
        )
    return found


def grpc_verdicts(section: dict[str, Any]) -> list[Verdict]:
    """G1, G2, B1 and B2 (both of its points) from the gRPC section."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for row in grpc_rows(section):
        by_target.setdefault(row["target"], []).append(row)
    out = []
    for target, rows in by_target.items():
        parts, oks, every = [], [], []
        for row in rows:
            who = row["reference"].split(",")[0].removeprefix("ours ")
            if row["ok"] is None:
                parts.append(f"{row['what']}: {who} not run")
                continue
            oks.append(row["ok"])
            every += row["ratios"]
            errors = f", {row['errors']} errors" if row["errors"] else ""
            parts.append(
                f"{row['what']}: ours {spread(row['ours_rps'])} req/s, {who} "
                f"{spread(row['reference_rps'])} req/s: {spread(row['ratios'], 1, 2)}x "
                f"(>= {row['bar']:g}x{errors})"
            )
        out.append(Verdict(target, all(oks) if oks else None, "; ".join(parts), every))
    return out


def print_grpc_targets(section: dict[str, Any]) -> None:
    print()
    print(
        "gRPC and binary tensors: req/s, median [min-max] over rounds; ratio: median of per-round"
    )
    print(
        f"  {'target':<7}{'point':<34}{'ours':>22}  {'reference':<14}{'req/s':>22}  "
        f"{'ratio':>20}  {'bar':>6}  verdict"
    )
    for row in grpc_rows(section):
        who = row["reference"].split(",")[0].removeprefix("ours ")
        if row["ok"] is None:
            print(f"  {row['target']:<7}{row['what']:<34}{'':>22}  {who:<14}{'not run':>22}")
            continue
        verdict = "PASS" if row["ok"] else "MISS"
        print(
            f"  {row['target']:<7}{row['what']:<34}{spread(row['ours_rps']):>22}  {who:<14}"
            f"{spread(row['reference_rps']):>22}  {spread(row['ratios'], 1, 2) + 'x':>20}  "
            f">= {row['bar']:g}x  {verdict}"
            + (f" ({row['errors']} errors)" if row["errors"] else "")
        )


def print_grpc_ceiling(section: dict[str, Any]) -> None:
    """One-row gRPC req/s against the bare grpc.aio ceiling's, per round."""
    results = section["results"]
    ceiling = results.get(f"{GRPC_CEILING_NAME}, 1 row c32")
    if not ceiling:
        return
    parts = []
    for who in ("ours gRPC", "MLServer gRPC"):
        found = results.get(f"{who}, 1 row c32")
        if found:
            ratios = paired(found, ceiling, lambda a, b: a["rps"] / b["rps"])
            cpu = median([r["server_cpu_us_per_request"] for r in found])
            parts.append(f"{who.split()[0]} {spread(ratios, 1, 2)}x ({cpu:.0f} us a call)")
    cpu = median([r["server_cpu_us_per_request"] for r in ceiling])
    print(
        f"  gRPC one row at 32 streams against the bare grpc.aio ceiling "
        f"({spread([r['rps'] for r in ceiling])} req/s, {cpu:.0f} us of server CPU a call): "
        + ", ".join(parts)
    )


def print_wire_split(section: dict[str, Any]) -> None:
    split, results = section["split"], section["results"]
    print()
    print(
        "where an inference request's CPU goes, in-process (us, median of rounds), against the "
        "server's CPU per request under load"
    )
    print(
        f"  {'request':<26}{'decode':>9}{'read':>9}{'predict':>9}{'answer':>9}"
        f"{'total':>9}  {'server':>8}{'rest':>8}  (server: the point)"
    )
    under = {
        "/v2 JSON": "ours /v2 JSON, {} c{}",
        "/v2 binary": "ours /v2 binary, {} c{}",
        "gRPC": "ours gRPC, {} c{}",
    }
    for name, s in split.items():
        path, label = name.split(", ", 1)
        connections = 32 if label == "1 row" else 1
        point = under[path].format(label, connections)
        found = results.get(point)
        server = median([r["server_cpu_us_per_request"] for r in found]) if found else math.nan
        cells = "".join(
            f"{s[step] * 1e6:>9.1f}" if step in s else f"{'-':>9}"
            for step in ("decode", "read", "predict", "answer", "total")
        )
        print(
            f"  {name:<26}{cells}  {server:>8.0f}{server - s['total'] * 1e6:>8.0f}  "
            f"({point.removeprefix('ours ')})"
        )
    for line in (
        "decode: the binary split (split_binary), protobuf's parse; read: the request to rows,",
        "checked; predict: the inference core (without the rollout's tallies); answer: the rest",
        "of the route's function (its whole less read and predict; gRPC's answer serialised).",
        "Each request as a client sends it again: a binary request's JSON and a one-row gRPC",
        "message seen before are not decoded again (service/v2/known.py, service/rpc/wire.py).",
        "rest: the server's CPU per request under load less the total: HTTP",
        "(uvicorn, the edge) or gRPC (grpc's core, asyncio, the servicer), and the rollout's",
        "tallies",
    ):
        print(f"  {line}")


# -- 6. side by side with an earlier build -------------------------------------------------


def baseline_tree(ref: str, workdir: Path) -> Path:
    """The sources of ``ref`` (a git revision of this repository), unpacked under workdir."""
    tree = workdir / "baseline-tree"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "model", "service"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def side_by_side(
    servers: Servers, plan: Plan, workdir: Path, ref: str, rows_only: int | None = None
) -> dict[str, Any]:
    """This build and ``ref``'s, each as ``iris-serve`` at its default settings, on the same
    points in interleaved rounds (the order reversed every other round). ``ref``'s server
    imports its own ``service`` and ``model`` (PYTHONPATH), with this environment's
    libraries."""
    tree = baseline_tree(ref, workdir)
    running = {
        "ours": servers.start(servers.new("ab-ours")),
        "baseline": servers.start(servers.new("ab-baseline", PYTHONPATH=str(tree))),
    }
    bodies: dict[tuple[str, int], Path] = {}
    points = []
    for rows, connections in AB_POINTS:
        if rows_only is not None and rows != rows_only:
            continue
        label = "1 row" if rows == 1 else f"{rows:,} rows"
        for path, write in (("/predict", predict_body), (OIP_PATH, oip_body)):
            bodies[path, rows] = workdir / f"ab-{rows}-{path.count('/')}.json"
            bodies[path, rows].write_bytes(write(rows))
            for name in running:
                points.append(Point(f"{name} {path}, {label}", name, rows, connections, path))
    results: dict[str, list[dict[str, Any]]] = {key(p): [] for p in points}
    for round_ in range(plan.repeats):
        print(f"  round {round_ + 1}/{plan.repeats}", flush=True)
        for point in points if round_ % 2 == 0 else reversed(points):
            found = measure(point, running[point.server], bodies[point.path, point.rows], plan)
            results[key(point)].append(found)
            show_point(point, found)
    for server in running.values():
        servers.stop(server.name)
    return {"ref": ref, "points": [asdict(p) for p in points], "results": results}


def ab_verdict(ab: dict[str, Any]) -> Verdict:
    """Each point's req/s against the baseline's, paired by round: all within 10%."""
    results = ab["results"]
    parts, oks, every = [], [], []
    for point in (Point(**p) for p in ab["points"]):
        if point.server != "ours":
            continue
        theirs = key(point).replace("ours ", "baseline ", 1)
        ratios = paired(results[key(point)], results[theirs], lambda a, b: a["rps"] / b["rps"])
        oks.append(median(ratios) >= 0.9)
        every += ratios
        parts.append(f"{point.name.removeprefix('ours ')} {spread(ratios, 1, 3)}x")
    return Verdict("A/B", all(oks), f"vs {ab['ref']}: " + "; ".join(parts) + " (>= 0.9x)", every)


# -- 4. while training ---------------------------------------------------------------------


def start_training(server: ServerProcess, token: str, epochs: int) -> str:
    body = {
        "hyperparameters": {"hidden_units": TRAINING_HIDDEN_UNITS, "epochs": epochs},
        "activate": False,
    }
    with server.client() as client:
        return start_job(client, body, {"Authorization": f"Bearer {token}"})


def training(server: ServerProcess, job_id: str, statuses: set[str], seconds: float) -> str:
    """Wait until the job reaches one of ``statuses``; its status (any end is a failure)."""
    with server.client() as client:
        found = wait_job(client, job_id, statuses, seconds)
    status: str = found["status"]
    return status


def calibrate_epochs(server: ServerProcess, token: str, plan: Plan) -> tuple[int, float]:
    """Epochs of hidden-256 Iris training that last the measurement plus 1.5 s when idle.

    Under the benchmark's load the job runs slower (8-10 s for 5 s points), so wrk's whole
    run falls inside it; each measurement says whether the job was still running at its end.
    """
    probe = 500
    job_id = start_training(server, token, probe)
    training(server, job_id, {"running"}, 30)
    started = time.perf_counter()
    training(server, job_id, {"succeeded"}, 120)
    per_epoch = (time.perf_counter() - started) / probe
    want = max(5.0, plan.seconds + 1.5)
    return min(10_000, max(200, math.ceil(want / per_epoch))), per_epoch


def while_training(server: ServerProcess, token: str, body: Path, plan: Plan) -> dict[str, Any]:
    """/predict at TRAINING_CONNECTIONS idle and while a job trains, in alternating rounds; on
    a quiet machine, then with LOAD_PROCESSES busy loops beside (the training child runs at
    nice 19 and must leave serving its share either way)."""
    point = Point("service, 1 row", "service", 1, TRAINING_CONNECTIONS)
    epochs, per_epoch = calibrate_epochs(server, token, plan)
    print(
        f"  training job: hidden {TRAINING_HIDDEN_UNITS}, {epochs} epochs on Iris "
        f"(calibrated at {per_epoch * 1e3:.2f} ms/epoch when idle), activate false",
        flush=True,
    )
    found: dict[str, Any] = {"epochs": epochs, "load_processes": LOAD_PROCESSES}
    for load in (0, LOAD_PROCESSES):
        if load:
            print(f"  with {load} busy process(es) beside", flush=True)
        with spinning(load):
            idle, busy = training_rounds(server, token, body, plan, point=point, epochs=epochs)
        prefix = "loaded_" if load else ""
        found[f"{prefix}idle"], found[f"{prefix}training"] = idle, busy
    return found


def training_rounds(
    server: ServerProcess, token: str, body: Path, plan: Plan, *, point: Point, epochs: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    idle: list[dict[str, Any]] = []
    busy: list[dict[str, Any]] = []
    url = f"{server.url}/predict"
    for round_ in range(plan.repeats):
        for kind in ("idle", "training") if round_ % 2 == 0 else ("training", "idle"):
            if kind == "idle":
                result = measure(point, server, body, plan)
                idle.append(result)
            else:
                job_id = start_training(server, token, epochs)
                training(server, job_id, {"running"}, 30)
                started = time.perf_counter()
                # The server is warm from the idle points: no warm-up, all of wrk's time
                # falls inside the training.
                result = wrk(url, body, TRAINING_CONNECTIONS, plan.seconds)
                with server.client() as client:
                    record = client.get(f"/train/{job_id}").json()
                    status = record["status"]
                    if status == "running":  # its end is not what is measured
                        client.post(
                            f"/train/{job_id}/cancel", headers={"Authorization": f"Bearer {token}"}
                        )
                result["still_training_after"] = status == "running"
                # Training takes only CPUs no task waits for: how far it got meanwhile.
                result["epochs_trained"] = (record.get("progress") or {}).get("epoch", 0)
                with server.client() as client:
                    done = wait_job(client, job_id, {"succeeded", "cancelled"}, 300)
                result["training_seconds"] = time.perf_counter() - started
                result["job_training_seconds"] = (done.get("metrics") or {}).get("training_seconds")
                busy.append(result)
            show_point(Point(f"/predict, {kind}", "service", 1, TRAINING_CONNECTIONS), result)
            if kind == "training":
                overlap = "" if result["still_training_after"] else "  (JOB ENDED FIRST)"
                print(
                    f"      training lasted {result['training_seconds']:.1f} s, "
                    f"{result['epochs_trained']} of {epochs} epochs during the point{overlap}"
                )
    return idle, busy


# -- 6. memory -----------------------------------------------------------------------------


PREDICT_COUNT = re.compile(
    r'^iris_http_requests_total\{[^}]*route="/predict"[^}]*status="200"[^}]*\}\s+(\S+)$',
    re.MULTILINE,
)


def served_predictions(server: ServerProcess) -> int:
    status, text = request(server.port, "GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    return int(sum(float(m) for m in PREDICT_COUNT.findall(text.decode())))


def memory(servers: Servers, body: Path, plan: Plan) -> dict[str, Any]:
    """VmRSS after 1,000 requests one by one, then at checkpoints of wrk load up to the end."""
    server = servers.start(servers.new("memory"))
    checkpoints = sorted(
        {c for c in (10_000, 30_000, plan.memory_requests) if c <= plan.memory_requests}
    )
    payload = body.read_bytes()
    samples: list[dict[str, Any]] = [{"requests": 0, "rss_kib": rss_kib(server.pid)}]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(MEMORY_FIRST):
            conn.request("POST", "/predict", payload, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/predict answered {response.status}")
    finally:
        conn.close()
    count = served_predictions(server)
    samples.append({"requests": count, "rss_kib": rss_kib(server.pid)})
    print(f"  after {count:>7,} requests: VmRSS {samples[-1]['rss_kib'] / 1024:.1f} MiB")
    rate: float | None = None
    budget = time.monotonic() + 300
    for checkpoint in checkpoints:
        while count < checkpoint and time.monotonic() < budget:
            # The first run, 1 s, finds the rate; later ones aim at the next checkpoint.
            seconds = 1 if rate is None else max(1, min(20, round((checkpoint - count) / rate)))
            result = wrk(f"{server.url}/predict", body, 32, seconds)
            rate = max(result["rps"], 100.0)
            count = served_predictions(server)
        samples.append({"requests": count, "rss_kib": rss_kib(server.pid), "loadavg": loadavg()})
        print(f"  after {count:>7,} requests: VmRSS {samples[-1]['rss_kib'] / 1024:.1f} MiB")
    servers.stop("memory")
    return {"samples": samples}


# -- targets and report --------------------------------------------------------------------


@dataclass
class Verdict:
    target: str
    ok: bool | None
    figures: str
    ratios: list[float] = field(default_factory=list)


def paired(
    a: list[dict[str, Any]], b: list[dict[str, Any]], fn: Callable[..., float]
) -> list[float]:
    return [fn(x, y) for x, y in zip(a, b, strict=True)]


def oip_verdicts(oip: dict[str, Any]) -> list[Verdict]:
    """P1v2 and P2v2 from the oip section; a peer that did not run leaves its part out."""
    results: dict[str, list[dict[str, Any]]] = oip["results"]
    one = f"ours {OIP_PATH}, 1 row c32"
    big = f"ours {OIP_PATH}, 10,000 rows c1"
    rps = {name: [r["rps"] for r in results[name]] for name in results}
    parts: list[str] = []
    oks: list[bool] = []
    every: list[float] = []
    for other, bar in (("MLServer, 1 row c32", 3.0), ("KServe, 1 row c32", 3.0)):
        if other not in results:
            parts.append(f"{other.split(',')[0]}: not run")
            continue
        ratios = paired(results[one], results[other], lambda a, b: a["rps"] / b["rps"])
        oks.append(median(ratios) >= bar)
        every += ratios
        parts.append(
            f"vs {other.split(',')[0]} {spread(rps[other])} req/s: {spread(ratios, 1, 2)}x "
            f"(>= {bar:g}x)"
        )
    predict = "ours /predict, 1 row c32"
    ratios = paired(results[one], results[predict], lambda a, b: a["rps"] / b["rps"])
    oks.append(median(ratios) >= 0.8)
    parts.append(f"vs /predict {spread(rps[predict])} req/s: {spread(ratios, 1, 2)}x (>= 0.8x)")
    out = [Verdict("P1v2", all(oks), f"/v2 {spread(rps[one])} req/s; " + "; ".join(parts), every)]
    other = "MLServer, 10,000 rows c1"
    if other not in results:
        out.append(Verdict("P2v2", None, "MLServer not run"))
        return out
    ratios = paired(results[big], results[other], lambda a, b: a["rows_per_s"] / b["rows_per_s"])
    ours_p50 = median([r["p50_us"] for r in results[big]])
    their_p50 = median([r["p50_us"] for r in results[other]])
    out.append(
        Verdict(
            "P2v2",
            median(ratios) >= 2 and ours_p50 < their_p50,
            f"/v2 {spread([r['rows_per_s'] for r in results[big]])} rows/s, MLServer "
            f"{spread([r['rows_per_s'] for r in results[other]])} rows/s: "
            f"{spread(ratios, 1, 2)}x (>= 2x); p50 {ours_p50 / 1e3:.1f} ms vs MLServer's "
            f"{their_p50 / 1e3:.1f} ms (must be below)",
            ratios,
        )
    )
    return out


def verdicts(report: dict[str, Any], plan: Plan) -> list[Verdict]:
    out: list[Verdict] = []
    tp = report.get("throughput")
    if tp:
        ceiling, service = tp["ceiling (raw ASGI) c32"], tp["service, 1 row c32"]
        ratios = paired(service, ceiling, lambda s, c: s["rps"] / c["rps"])
        out.append(
            Verdict(
                "P1",
                median(ratios) >= 0.35,
                f"service {spread([r['rps'] for r in service])} req/s, ceiling "
                f"{spread([r['rps'] for r in ceiling])} req/s: "
                f"{spread(ratios, 1, 3)}x (target >= 0.35x)",
                ratios,
            )
        )
        # The server's 10,000-row capacity: the better of 1 and 4 connections in each round.
        big = [
            max(a["rows_per_s"], b["rows_per_s"])
            for a, b in zip(
                tp["service, 10,000 rows c1"], tp["service, 10,000 rows c4"], strict=True
            )
        ]
        ratios = [b / s["rps"] for b, s in zip(big, service, strict=True)]
        out.append(
            Verdict(
                "P2",
                median(ratios) >= 60,
                f"10,000 rows {spread(big)} rows/s (better of 1 and 4 connections), one row "
                f"at 32 connections {spread([r['rps'] for r in service])} req/s: "
                f"{spread(ratios, 1, 1)}x (target >= 60x)",
                ratios,
            )
        )
    if report.get("oip"):
        out.extend(oip_verdicts(report["oip"]))
    if "points" in report.get("grpc", {}):
        out.extend(grpc_verdicts(report["grpc"]))
    if report.get("side_by_side"):
        out.append(ab_verdict(report["side_by_side"]))
    tr = report.get("training")
    for prefix, name in (("", "P3"), ("loaded_", "P3 loaded")):
        if not tr or f"{prefix}training" not in tr:
            continue
        busy, idle = tr[f"{prefix}training"], tr[f"{prefix}idle"]
        ratios = paired(busy, idle, lambda t, i: t["p99_us"] / i["p99_us"])
        out.append(
            Verdict(
                name,
                median(ratios) <= 1.5,
                f"p99 training {spread([r['p99_us'] for r in busy], 1e-3, 2)} ms, "
                f"idle {spread([r['p99_us'] for r in idle], 1e-3, 2)} ms: "
                f"{spread(ratios, 1, 2)}x (target <= 1.5x)",
                ratios,
            )
        )
    gr = report.get("gradients")
    if gr:
        if "skipped" in gr:
            out.append(Verdict("P4", None, f"skipped: {gr['skipped']}"))
        else:
            name = next(k for k in gr if k.startswith("served model"))
            s = gr[name]
            out.append(
                Verdict(
                    "P4",
                    median(s["speedups"]) >= 2,
                    f"{name}: ours {spread(s['ours_seconds'], 1e3, 2)} ms, torch (the faster "
                    f"of {gr['torch_threads']} threads and 1, per round) "
                    f"{spread(s['torch_best_seconds'], 1e3, 2)} ms: "
                    f"{spread(s['speedups'], 1, 2)}x faster (target >= 2x)",
                    s["speedups"],
                )
            )
    p5 = report.get("pass_vs_memory")
    if p5:
        # The server and the training child run the BLAS on one thread (IRIS_BLAS_THREADS=1),
        # so that is the pass the verdict judges when threadpoolctl can reproduce it.
        single = p5["ratios_blas_1_thread"]
        judged = single or p5["ratios"]
        out.append(
            Verdict(
                "P5",
                median(judged) <= 2.5,
                (
                    f"pass with the BLAS at 1 thread, as the service runs it: "
                    f"{spread(p5['pass_seconds_blas_1_thread'], 1e3, 2)} ms"
                    if single
                    else f"pass {spread(p5['pass_seconds'], 1e3, 2)} ms"
                )
                + f", memory bound {spread(p5['copy_seconds'], 1e3, 2)} ms: "
                f"{spread(judged, 1, 2)}x (target <= 2.5x); with the BLAS's default threads "
                f"{spread(p5['ratios'], 1, 2)}x",
                judged,
            )
        )
    mem, cold = report.get("memory"), report.get("cold_start")
    if mem and cold:
        first = mem["samples"][1]
        last = mem["samples"][-1]
        growth = last["rss_kib"] / first["rss_kib"] - 1
        empty = median(cold["empty"])
        reduced = "" if last["requests"] >= 100_000 else " (fewer requests than the target's)"
        out.append(
            Verdict(
                "P6",
                abs(growth) <= 0.10 and empty < 1.5,
                f"RSS {first['rss_kib'] / 1024:.1f} MiB after {first['requests']:,}, "
                f"{last['rss_kib'] / 1024:.1f} MiB after {last['requests']:,}: "
                f"{growth * 100:+.1f}% (target within 10%){reduced}; cold start empty "
                f"{spread(cold['empty'], 1, 3)} s (target < 1.5 s), stored "
                f"{spread(cold['stored'], 1, 3)} s",
            )
        )
    return out


def print_table(
    points: list[Point], results: dict[str, list[dict[str, Any]]], title: str = "HTTP /predict"
) -> None:
    print()
    print(f"{title} (median [min-max] over rounds)")
    width = max(31, *(len(point.name) + 1 for point in points))
    print(
        f"  {'point':<{width}}{'conns':>5}  {'req/s':>22}  {'rows/s':>24}  "
        f"{'p50 ms':>20}  {'p99 ms':>22}  {'server CPU us/req':>24}"
    )
    for point in points:
        rs = results[key(point)]
        errors = sum(r["error_count"] for r in rs)
        print(
            f"  {point.name:<{width}}{point.connections:>5}  "
            f"{spread([r['rps'] for r in rs], 1, 1):>22}  "
            f"{spread([r['rows_per_s'] for r in rs], 1, 0):>24}  "
            f"{spread([r['p50_us'] for r in rs], 1e-3, 2):>20}  "
            f"{spread([r['p99_us'] for r in rs], 1e-3, 2):>22}  "
            f"{spread([r['server_cpu_us_per_request'] for r in rs], 1, 0):>24}"
            + (f"  ({errors} errors)" if errors else "")
        )


def print_access_log(tp: dict[str, list[dict[str, Any]]]) -> None:
    """What the access log costs the service, from the points with it on and off (the
    default is off)."""
    off, on = tp.get("service, 1 row c32"), tp.get(f"service {WITH_ACCESS_LOG}, 1 row c32")
    if not on or not off:
        return
    ratios = paired(off, on, lambda f, n: f["rps"] / n["rps"])
    cost = paired(
        on, off, lambda n, f: n["server_cpu_us_per_request"] - f["server_cpu_us_per_request"]
    )
    print(
        f"  the access log at 32 connections: off {spread([r['rps'] for r in off])} req/s, on "
        f"{spread([r['rps'] for r in on])} req/s: off/on {spread(ratios, 1, 2)}x; it costs "
        f"{spread(cost, 1, 0)} us of server CPU per request"
    )


def print_split(split: dict[int, Any], tp: dict[str, list[dict[str, Any]]] | None) -> None:
    print()
    print(
        "server CPU per request (us): /predict's steps in-process vs the whole server over "
        "HTTP at 1 connection"
    )
    print(
        f"  {'rows':>6} {'parse+valid.':>13} {'array':>9} {'fast':>9} {'numpy':>9} "
        f"{'counters':>9} {'serialise':>10} {'route sum':>10} {'HTTP server':>12} "
        f"{'ceiling':>8} {'rest':>8}"
    )

    def cpu(name: str) -> float:
        found = (tp or {}).get(name)
        return median([r["server_cpu_us_per_request"] for r in found]) if found else math.nan

    ceiling = cpu("ceiling (raw ASGI) c1")
    for rows, s in split.items():
        route = s.get("fast_path", s["schema_path"]) * 1e6
        server = cpu("service, 1 row c1" if rows == 1 else f"service, {rows:,} rows c1")
        print(
            f"  {rows:>6} {s['parse'] * 1e6:>13.1f} {s['array'] * 1e6:>9.1f} "
            f"{s.get('fast', math.nan) * 1e6:>9.1f} {s['numpy'] * 1e6:>9.1f} "
            f"{s['counters'] * 1e6:>9.1f} {s['serialise'] * 1e6:>10.1f} {route:>10.1f} "
            f"{server:>12.0f} {ceiling:>8.0f} {server - ceiling - route:>8.0f}"
        )
    for line in (
        "route sum: fast + numpy + counters + serialise when the fast path takes the body",
        "(the route tries it first), else parse + array + numpy + counters + serialise.",
        "rest: the server's CPU over HTTP less the ceiling's and the route sum (FastAPI,",
        "Starlette, the middleware, the access log, the thread pool; a busy machine adds noise)",
    ):
        print(f"  {line}")


def describe_machine() -> dict[str, Any]:
    import fastapi
    import pydantic
    import uvicorn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastapi": fastapi.__version__,
        "pydantic": pydantic.__version__,
        "uvicorn": uvicorn.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


# -- main ----------------------------------------------------------------------------------


SECTIONS = ("cold", "inprocess", "throughput", "training", "oip", "grpc", "memory")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s points")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every sample here")
    parser.add_argument("--repeats", type=int, help="rounds (default 3, --quick 1)")
    parser.add_argument("--seconds", type=int, help="wrk seconds per point (default 5)")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=DEFAULT_SCRATCH,
        help="where the peers' virtualenvs are installed and kept (default bench/.scratch)",
    )
    parser.add_argument(
        "--mlserver-parallel-workers",
        type=int,
        default=0,
        metavar="N",
        help="MLServer's parallel_workers (default 0: one process, like the service's default)",
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="leave MLServer and KServe out of the oip and grpc sections",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run this build and git revision REF's side by side (the A/B section)",
    )
    parser.add_argument(
        "--ab-rows",
        type=int,
        choices=[rows for rows, _ in AB_POINTS],
        help="with --baseline: only the points of this many rows (more rounds in the time)",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench-http: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    plan = Plan(
        repeats=args.repeats or (1 if args.quick else 3),
        seconds=args.seconds or (2 if args.quick else 5),
        warmup=1 if args.quick else 2,
        memory_requests=10_000 if args.quick else 100_000,
        quick=args.quick,
    )
    only = set((args.only or ",".join(SECTIONS)).split(","))
    unknown = only - set(SECTIONS)
    if unknown:
        print(f"bench-http: unknown sections {sorted(unknown)}", file=sys.stderr)
        return 2
    no_h2load = "grpc" in only and shutil.which("h2load") is None
    if no_h2load and args.only:
        print("bench-http: grpc needs h2load (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    began = time.perf_counter()
    report: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": describe_machine(),
        "uptime_before": uptime(),
    }
    print(f"bench-http: {plan}")
    print(f"uptime before: {report['uptime_before']}", flush=True)
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="iris-bench-http-") as tmp:
        workdir = Path(tmp)
        raw_bodies = {rows: predict_body(rows) for rows in ROW_COUNTS}
        bodies: dict[int, Path] = {}
        for rows, data in raw_bodies.items():
            bodies[rows] = workdir / f"predict-{rows}.json"
            bodies[rows].write_bytes(data)
        with servers_in(workdir, token) as servers:
            if "cold" in only:
                report["cold_start"] = cold_start(servers, plan)
            if "inprocess" in only:
                print("in-process", flush=True)
                stored = default_model(workdir)
                report["split"] = predict_split(stored, raw_bodies, plan)
                gc.collect()
                report["pass_vs_memory"] = pass_vs_memory(plan)
                report["gradients"] = gradients_vs_torch(stored, plan)
            points: list[Point] = []
            if "throughput" in only or "training" in only:
                service = servers.start(servers.new("service"))
                status, answer = request(
                    service.port,
                    "POST",
                    "/predict",
                    body=raw_bodies[1],
                    headers={"Content-Type": "application/json"},
                )
                if status != 200:
                    raise RuntimeError(f"one-row /predict answered {status}: {answer!r}")
                report["one_row_answer_bytes"] = len(answer)
                if "throughput" in only:
                    print(
                        f"HTTP throughput (wrk -t1, {plan.warmup} s warm-up + {plan.seconds} s "
                        f"per point; ceiling answers {len(answer)} bytes like one-row /predict)",
                        flush=True,
                    )
                    print(f"  ceiling: raw ASGI app, uvicorn {ceiling.describe()}", flush=True)
                    running = {
                        "service": service,
                        "ceiling": servers.start(servers.new("ceiling", ceiling_bytes=len(answer))),
                        "service2": servers.start(servers.new("service2", workers=2)),
                    }
                    if has_access_log_setting():
                        running["service_log"] = servers.start(
                            servers.new("service_log", IRIS_ACCESS_LOG="true")
                        )
                    else:
                        print(f"  {WITH_ACCESS_LOG}: skipped (service/config.py has no access_log)")
                    points, report["throughput"] = throughput(running, bodies, plan)
                    for name in ("ceiling", "service2", "service_log"):
                        servers.stop(name)
                if "training" in only:
                    print(f"/predict at {TRAINING_CONNECTIONS} connections, idle vs training")
                    report["training"] = while_training(service, token, bodies[1], plan)
                servers.stop("service")
            if "oip" in only:
                print(
                    "Open Inference Protocol: ours and the peers on the same weights; one row at "
                    f"32 connections, 10,000 rows at 1 (wrk -t1, {plan.warmup} s warm-up + "
                    f"{plan.seconds} s per point)",
                    flush=True,
                )
                report["oip"] = oip(
                    servers,
                    plan,
                    workdir,
                    args.scratch,
                    with_peers=not args.no_peers,
                    mlserver_workers=args.mlserver_parallel_workers,
                )
            if "grpc" in only and no_h2load:
                print("gRPC and binary tensors: skipped (h2load is not installed: apt-get "
                      "install nghttp2-client)", flush=True)  # fmt: skip
                report["grpc"] = {"skipped": "h2load is not installed"}
            elif "grpc" in only:
                print(
                    "gRPC and binary tensors: ours and MLServer's gRPC on the same weights (h2load "
                    "-t1 -c1: 32 streams for one row, 1 for 10,000 rows), /v2 binary and JSON (wrk "
                    f"-t1); {plan.warmup} s warm-up + {plan.seconds} s per point",
                    flush=True,
                )
                report["grpc"] = grpc_binary(
                    servers,
                    plan,
                    workdir,
                    args.scratch,
                    with_peers=not args.no_peers,
                    mlserver_workers=args.mlserver_parallel_workers,
                )
            if args.baseline:
                print(f"side by side with {args.baseline} (wrk -t1, interleaved rounds)")
                report["side_by_side"] = side_by_side(
                    servers, plan, workdir, args.baseline, args.ab_rows
                )
            if "memory" in only:
                print(f"memory (one-row /predict; {plan.memory_requests:,} requests)")
                report["memory"] = memory(servers, bodies[1], plan)
    report["uptime_after"] = uptime()
    report["seconds"] = time.perf_counter() - began
    if points:
        print_table(points, report["throughput"])
        print(
            f"  ceiling: a raw ASGI app under uvicorn {ceiling.describe()}; "
            "the service at its default settings"
        )
        print_access_log(report["throughput"])
    if "oip" in report:
        oip_points = [Point(**p) for p in report["oip"]["points"]]
        print_table(oip_points, report["oip"]["results"], "Open Inference Protocol and /predict")
    if "points" in report.get("grpc", {}):
        grpc_points = [Point(**p) for p in report["grpc"]["points"]]
        print_table(
            grpc_points,
            report["grpc"]["results"],
            "gRPC (conns: streams on one connection) and /v2 JSON and binary",
        )
        print_grpc_targets(report["grpc"])
        print_grpc_ceiling(report["grpc"])
        if "skipped" not in report["grpc"]["split"]:
            print_wire_split(report["grpc"])
    if "side_by_side" in report:
        ab = report["side_by_side"]
        ab_points = [Point(**p) for p in ab["points"]]
        print_table(ab_points, ab["results"], f"this build and {ab['ref']}, side by side")
    if "split" in report:
        print_split(report["split"], report.get("throughput"))
    report["verdicts"] = [asdict(v) for v in verdicts(report, plan)]
    print()
    print("targets")
    for v in verdicts(report, plan):
        mark = "SKIP" if v.ok is None else "PASS" if v.ok else "MISS"
        print(f"  {v.target} {mark}  {TARGETS[v.target]}")
        print(f"           {v.figures}")
    print()
    print(f"uptime after: {report['uptime_after']}")
    print(f"took {report['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
        print(f"samples written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
