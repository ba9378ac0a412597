"""Bounded soak of ``iris-serve``, run by `make soak` (bench/soak.py) and tests/test_soak.py.

The scenario, once per worker count (``IRIS_WORKERS=1`` and ``2`` by default):

* ``iris-serve`` starts on a free port of 127.0.0.1 with a fresh ``IRIS_DATA_DIR`` (a
  temporary directory) and a known ``IRIS_API_TOKEN``, and is always stopped again
  (``ServerProcess`` of harness/servers.py).
* A load generator in processes of its own (``--load-processes``, asyncio on raw sockets,
  HTTP/1.1 keep-alive) holds ``--connections`` connections, each POSTing /predict in a closed
  loop with 1, 5 or 50 Iris rows; every ``PIN_EVERY``-th request of a connection names an
  earlier served version in ``model_version`` (a rollback read through the registry's cache).
  Every answer is checked: status 200, and each row's probabilities ``==`` (bit for bit) the
  math of the version the answer names, recomputed here with
  ``ModelStore(data/models).load(version)`` and ``model.network.predict_proba`` on the same
  rows (cached per version and body), labels and class indices equal to the argmax.
* Meanwhile the controller (this process) runs ``--retrains`` training jobs (``POST /train``,
  a few epochs, a new seed each, activated; polled until they succeed) and ``--activations``
  roll-backs and roll-forwards (``POST /models/{v}/activate``, cycling through the stored
  versions), spread evenly between the end of the warm-up and the last seconds of the run.
* RSS (``VmRSS``) and open file descriptors (``/proc/PID/fd``) of the server processes (the
  uvicorn process and, with several workers, its worker children; training children are not
  counted) are read after the warm-up and again at the end, still under load.

PASS needs: no answer other than 200 and no transport error, no mismatch, every retrain
succeeded and every activation answered 200, every version that was current for at least
``SERVED_SECONDS`` seen in answers, RSS growth under ``RSS_GROWTH_LIMIT``, each process's
fd count within ``FD_SLACK`` of its warm-up figure, and the same server processes at the end
as after the warm-up. The load runs at least ``--seconds``, longer only if the controller
falls behind. CPU time of the server processes and of the load generator over the window is
reported, to show which side was the bottleneck. Exit status 1 on FAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import secrets
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from harness.servers import (
    ServerProcess,
    cpu_seconds,
    loadavg,
    open_fds,
    post_fresh_connection,
    rss_kib,
    worker_pids,
)
from model.data import CLASSES, FEATURES, load_iris
from model.errors import ModelStoreError
from model.network import FloatArray, Model, predict_proba
from model.persistence import ModelStore

ROW_COUNTS = (1, 5, 50)
BODIES_PER_SIZE = 4
PIN_EVERY = 10
"""Every tenth request of a connection names an earlier served version (0: never)."""
TRAIN_EPOCHS = 20
RSS_GROWTH_LIMIT = 0.10
FD_SLACK = 5
SERVED_SECONDS = 1.0
"""A version current this long must show up in answers (workers poll CURRENT every 0.2 s)."""
JOB_SECONDS = 60.0
EXAMPLES = 5


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 60.0
    connections: int = 32
    retrains: int = 10
    activations: int = 10
    warmup: float = 5.0
    tail: float = 2.0
    """Seconds between the last controller event and the end of the run."""
    load_processes: int = 1
    pin_every: int = PIN_EVERY
    epochs: int = TRAIN_EPOCHS


# -- request bodies and the math they must get back ------------------------------------------


@dataclass(frozen=True)
class Body:
    raw: FloatArray  # (n, 4) rows as sent, in centimetres
    instances: bytes  # the JSON array of those rows


def make_bodies(seed: int = 0) -> list[Body]:
    """``BODIES_PER_SIZE`` row sets of each size in ``ROW_COUNTS``, drawn from the Iris data."""
    iris = load_iris().raw
    rng = np.random.default_rng(seed)
    bodies = []
    for rows in ROW_COUNTS:
        for _ in range(BODIES_PER_SIZE):
            picked = iris[rng.choice(iris.shape[0], size=rows, replace=False)].tolist()
            instances = [dict(zip(FEATURES, row, strict=True)) for row in picked]
            bodies.append(Body(np.array(picked, dtype=np.float64), orjson.dumps(instances)))
    return bodies


def request_bytes(port: int, body: Body, version: str | None) -> bytes:
    """A keep-alive POST /predict for ``body``, pinned to ``version`` when given."""
    pin = b"" if version is None else b'"model_version":"' + version.encode() + b'",'
    content = b"{" + pin + b'"instances":' + body.instances + b"}"
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


class Checker:
    """Compares /predict answers with the math of the version they name, bit for bit."""

    def __init__(self, models_dir: Path, bodies: Sequence[Body]) -> None:
        self.store = ModelStore(models_dir)
        self.bodies = bodies
        self.models: dict[str, Model] = {}
        self.expected: dict[tuple[str, int], tuple[list[list[float]], list[int]]] = {}

    def expected_for(self, version: str, index: int) -> tuple[list[list[float]], list[int]]:
        """o_s (as Python floats) and its argmax for body ``index`` under ``version``."""
        key = (version, index)
        hit = self.expected.get(key)
        if hit is None:
            model = self.models.get(version)
            if model is None:
                model = self.models[version] = self.store.load(version).model
            o_s = predict_proba(model, self.bodies[index].raw)
            hit = self.expected[key] = (o_s.tolist(), o_s.argmax(axis=1).tolist())
        return hit

    def check(self, content: bytes, index: int, pinned: str | None) -> tuple[str | None, str]:
        """(None, version) if the answer is the math of the version it names, else (why, ...)."""
        try:
            answer = orjson.loads(content)
            version = answer["model_version"]
            predictions = answer["predictions"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            return f"malformed answer ({error!r}): {content[:200]!r}", "?"
        if pinned is not None and version != pinned:
            return f"asked for version {pinned}, the answer names {version}", version
        try:
            probabilities, classes = self.expected_for(version, index)
        except ModelStoreError as error:
            return f"names version {version}, which cannot be loaded here: {error}", version
        if len(predictions) != len(probabilities):
            return f"{len(predictions)} predictions for {len(probabilities)} rows", version
        for row, (prediction, p, k) in enumerate(
            zip(predictions, probabilities, classes, strict=True)
        ):
            try:
                got = [prediction["probabilities"][label] for label in CLASSES]
                label, class_index = prediction["label"], prediction["class_index"]
            except (KeyError, TypeError) as error:
                return f"row {row}: malformed prediction ({error!r}): {prediction!r}", version
            if got != p:
                return (
                    f"row {row} of body {index}: probabilities {got!r}, "
                    f"the math of {version} gives {p!r}"
                ), version
            if class_index != k or label != CLASSES[k]:
                return f"row {row}: {label}/{class_index}, argmax is {CLASSES[k]}/{k}", version
        return None, version


# -- the load generator (its own process) --------------------------------------------------


@dataclass
class LoadStats:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    connects: int = 0
    mismatches: int = 0
    pinned: int = 0
    rows: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    unpinned_versions: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def note(self, what: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(what)

    def report(self) -> dict[str, Any]:
        """Plain types for the queue (``asdict`` would rebuild a Counter from item pairs)."""
        report = {name: getattr(self, name) for name in self.__dataclass_fields__}
        report["statuses"] = dict(self.statuses)
        report["versions"] = dict(self.versions)
        report["unpinned_versions"] = sorted(self.unpinned_versions)
        return report


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, close = None, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            close = value == "close"
    if chunked:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return status, b"".join(parts), close
    if length is None:
        return status, await reader.read(), True
    return status, await reader.readexactly(length), close


async def drive_connection(
    slot: int,
    *,
    port: int,
    bodies: Sequence[Body],
    checker: Checker,
    stats: LoadStats,
    stop: asyncio.Event,
    pin_every: int,
) -> None:
    """One keep-alive connection posting /predict in a closed loop until ``stop``."""
    plain = [request_bytes(port, body, None) for body in bodies]
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    sent = 0
    try:
        while not stop.is_set():
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError as error:
                    stats.transport_errors += 1
                    stats.note(f"connect: {error!r}")
                    await asyncio.sleep(0.1)
                    continue
                stats.connects += 1
            assert reader is not None
            index = (slot + sent) % len(bodies)
            known = sorted(stats.unpinned_versions)
            pinned = None
            if pin_every and sent % pin_every == pin_every - 1 and known:
                pinned = known[(sent // pin_every) % len(known)]
            request = plain[index] if pinned is None else request_bytes(port, bodies[index], pinned)
            sent += 1
            started = time.perf_counter()
            try:
                writer.write(request)
                await writer.drain()
                status, content, close = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                stats.transport_errors += 1
                stats.note(f"connection {slot}: {error!r}")
                writer.close()
                writer = None
                continue
            stats.latencies.append(time.perf_counter() - started)
            stats.requests += 1
            stats.statuses[status] += 1
            if status != 200:
                stats.note(f"status {status}: {content[:300]!r}")
            else:
                problem, version = checker.check(content, index, pinned)
                stats.versions[version] += 1
                stats.rows += bodies[index].raw.shape[0]
                if pinned is None:
                    stats.unpinned_versions.add(version)
                else:
                    stats.pinned += 1
                if problem is not None:
                    stats.mismatches += 1
                    stats.note(problem)
            if close:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def generate(
    port: int,
    *,
    slots: Sequence[int],
    models_dir: Path,
    stop_flag: EventType,
    hard_stop: float,
    pin_every: int,
) -> LoadStats:
    bodies = make_bodies()
    checker = Checker(models_dir, bodies)
    stats = LoadStats()
    stop = asyncio.Event()
    parent = os.getppid()

    async def watch() -> None:
        # the stop flag is another process's; poll it (and stop if that process is gone)
        while not (stop_flag.is_set() or time.monotonic() > hard_stop or os.getppid() != parent):
            await asyncio.sleep(0.05)
        stop.set()

    watcher = asyncio.create_task(watch())
    await asyncio.gather(
        *(
            drive_connection(
                s,
                port=port,
                bodies=bodies,
                checker=checker,
                stats=stats,
                stop=stop,
                pin_every=pin_every,
            )
            for s in slots
        )
    )
    await watcher
    return stats


def load_process(
    *,
    port: int,
    slots: list[int],
    models_dir: str,
    go: EventType,
    stop: EventType,
    hard_stop: float,
    pin_every: int,
    results: multiprocessing.Queue[dict[str, Any]],
) -> None:
    """Entry point of a load-generator process: wait for ``go``, load until ``stop``, report."""
    make_bodies()  # warm imports and the Iris data before the clock starts
    results.put({"ready": os.getpid()})
    if not go.wait(120):
        return
    cpu, wall = time.process_time(), time.monotonic()
    stats = asyncio.run(
        generate(
            port,
            slots=slots,
            models_dir=Path(models_dir),
            stop_flag=stop,
            hard_stop=hard_stop,
            pin_every=pin_every,
        )
    )
    stats.cpu_seconds = time.process_time() - cpu
    stats.wall_seconds = time.monotonic() - wall
    results.put(stats.report())


# -- the server's processes, read from /proc ---------------------------------------------------


def server_pids(server_pid: int) -> list[int]:
    """The uvicorn process and its workers (training children excluded)."""
    return sorted({server_pid} | worker_pids(server_pid))


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def established_per_process(port: int, pids: Sequence[int]) -> dict[int, int]:
    """How many established connections to ``port`` each of ``pids`` holds the server end of."""
    local = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[1].endswith(local) and fields[3] == "01":
                    inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        count = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    count += os.readlink(f"/proc/{pid}/fd/{fd}") in inodes
        counts[pid] = count
    return counts


@dataclass(frozen=True)
class Sample:
    t: float
    rss_kib: dict[int, int]
    fds: dict[int, int]

    @classmethod
    def take(cls, pids: Sequence[int], t: float) -> Sample:
        rss, fds = {}, {}
        for pid in pids:
            with contextlib.suppress(OSError):
                rss[pid] = rss_kib(pid)
                fds[pid] = open_fds(pid)
        return cls(t, rss, fds)


# -- the controller ----------------------------------------------------------------------------


def schedule(retrains: int, activations: int) -> list[str]:
    """Retrains and activations interleaved evenly, a retrain first."""
    events = [((i + 0.25) / retrains, "retrain") for i in range(retrains)]
    events += [((j + 0.75) / activations, "activate") for j in range(activations)]
    return [kind for _, kind in sorted(events)]


@dataclass
class Controller:
    client: httpx.Client
    epochs: int
    t0: float
    stored: list[str] = field(default_factory=list)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    retrains: int = 0
    activations: int = 0
    retrain_seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def retrain(self, seed: int) -> None:
        started = time.monotonic()
        body = {"hyperparameters": {"epochs": self.epochs, "seed": seed}, "activate": True}
        response = self.client.post("/train", json=body)
        if response.status_code != 202:
            self.failures.append(f"POST /train: {response.status_code} {response.text[:300]}")
            return
        job_id = response.json()["job_id"]
        deadline = started + JOB_SECONDS
        while True:
            answer = self.client.get(f"/train/{job_id}")
            if answer.status_code != 200:
                self.failures.append(f"GET /train/{job_id}: {answer.status_code}")
                return
            job = answer.json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                self.failures.append(f"job {job_id} not done within {JOB_SECONDS:g} s")
                return
            time.sleep(0.05)
        if job["status"] != "succeeded" or not job["activated"]:
            self.failures.append(f"job {job_id}: {job['status']}, error {job['error']!r}")
            return
        self.retrains += 1
        self.retrain_seconds.append(time.monotonic() - started)
        self.stored.append(job["model_version"])
        self.timeline.append((self.now(), job["model_version"], "retrain"))

    def run(self, config: SoakConfig) -> None:
        """The retrains and activations, spread evenly from the warm-up to the tail."""
        events = schedule(config.retrains, config.activations)
        window = max(0.0, config.seconds - config.tail - config.warmup)
        for k, kind in enumerate(events):
            at = self.t0 + config.warmup + (k + 0.5) * window / len(events)
            time.sleep(max(0.0, at - time.monotonic()))
            try:
                if kind == "retrain":
                    self.retrain(seed=100 + k)
                else:
                    self.activate(self.activations)
            except httpx.HTTPError as error:
                self.failures.append(f"{kind}: {error!r}")

    def activate(self, index: int) -> None:
        current = self.timeline[-1][1]
        candidates = [v for v in self.stored if v != current] or self.stored
        version = candidates[index % len(candidates)]
        response = self.client.post(f"/models/{version}/activate")
        if response.status_code != 200 or response.json().get("current") != version:
            self.failures.append(
                f"activate {version}: {response.status_code} {response.text[:300]}"
            )
            return
        self.activations += 1
        self.timeline.append((self.now(), version, "activate"))


# -- one run ---------------------------------------------------------------------------------


def wait_all_workers(server: ServerProcess, workers: int, seconds: float = 30.0) -> None:
    """With several workers, wait until each has answered a /predict (each has its model)."""
    if workers == 1:
        return
    body = {"instances": [dict.fromkeys(FEATURES, 1.0)]}
    deadline = time.monotonic() + seconds
    answered: set[int] = set()
    while True:
        pids = worker_pids(server.pid)
        if len(pids) >= workers:
            status, _, pid = post_fresh_connection(server, "/predict", body, pids)
            if status == 200 and pid is not None:
                answered.add(pid)
            if answered >= pids:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only workers {sorted(answered)} of {sorted(pids)} answered")
        time.sleep(0.02)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run_soak(workers: int, config: SoakConfig, workdir: Path) -> dict[str, Any]:
    """Start a server with ``workers`` workers, soak it, stop it; returns the result."""
    token = secrets.token_urlsafe(24)
    env = {"IRIS_WORKERS": str(workers), "IRIS_API_TOKEN": token}
    data_dir = workdir / f"data-workers-{workers}"
    server = ServerProcess(data_dir, workdir / f"server-workers-{workers}.log", env)
    server.start()
    try:
        wait_all_workers(server, workers)
        result = soak(server, workers, config, data_dir / "models")
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    result["server_log_errors"] = [
        line for line in log.splitlines() if "Traceback" in line or " ERROR " in line
    ][:EXAMPLES]
    result["server_log"] = str(server.log_path)
    return result


class LoadGenerator:
    """The load-generator processes (spawned, so they share nothing with this one)."""

    def __init__(self, port: int, models_dir: Path, config: SoakConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self.results: multiprocessing.Queue[dict[str, Any]] = context.Queue()
        self.go, self.stop = context.Event(), context.Event()
        slots = list(range(config.connections))
        shares = [slots[i :: config.load_processes] for i in range(config.load_processes)]
        common = {
            "port": port,
            "models_dir": str(models_dir),
            "go": self.go,
            "stop": self.stop,
            "hard_stop": time.monotonic() + 3 * config.seconds + 300,
            "pin_every": config.pin_every,
            "results": self.results,
        }
        self.processes = [
            context.Process(target=load_process, kwargs=common | {"slots": share}, daemon=True)
            for share in shares
            if share
        ]

    def __enter__(self) -> LoadGenerator:
        for process in self.processes:
            process.start()
        for _ in self.processes:
            self.results.get(timeout=60)  # each says it is ready
        return self

    def reports(self) -> list[dict[str, Any]]:
        """After ``stop``: each process's figures."""
        return [self.results.get(timeout=60) for _ in self.processes]

    def __exit__(self, *exc_info: object) -> None:
        self.go.set()
        self.stop.set()
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join(5)
        self.results.close()
        self.results.join_thread()


def soak(
    server: ServerProcess, workers: int, config: SoakConfig, models_dir: Path
) -> dict[str, Any]:
    """Load, retrain and activate for the run; sample RSS and fds; returns the summary."""
    pids = server_pids(server.pid)
    samples: list[Sample] = []
    auth = {"Authorization": f"Bearer {server.token}"}
    with (
        LoadGenerator(server.port, models_dir, config) as load,
        httpx.Client(base_url=server.url, timeout=30.0, headers=auth) as client,
    ):
        initial = client.get("/models").json()["current"]
        server_cpu0 = {pid: cpu_seconds(pid) for pid in pids}
        machine0, load0 = machine_ticks(), loadavg()
        own_cpu0 = time.process_time()
        t0 = time.monotonic()
        load.go.set()
        controller = Controller(client, config.epochs, t0, stored=[initial])
        controller.timeline.append((0.0, initial, "initial"))
        sampling_done = threading.Event()

        def sampler() -> None:
            while not sampling_done.wait(1.0):
                samples.append(Sample.take(pids, time.monotonic() - t0))

        sampling = threading.Thread(target=sampler, name="sampler", daemon=True)
        sampling.start()
        time.sleep(max(0.0, t0 + config.warmup - time.monotonic()))
        start = Sample.take(pids, time.monotonic() - t0)
        controller.run(config)
        # at least --seconds in all, and the tail after the last event even if it ran late
        time.sleep(max(t0 + config.seconds - time.monotonic(), config.tail, 0.0))
        end = Sample.take(pids, time.monotonic() - t0)
        connections = established_per_process(server.port, pids)
        server_cpu = {pid: cpu_seconds(pid) - server_cpu0[pid] for pid in pids}
        machine1 = machine_ticks()
        machine = {
            "cpus": os.cpu_count(),
            "busy_percent": 100 * (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1]),
            "loadavg_start": load0,
            "loadavg_end": loadavg(),
        }
        elapsed = time.monotonic() - t0
        load.stop.set()
        sampling_done.set()
        sampling.join()
        own_cpu = time.process_time() - own_cpu0
        reports = load.reports()
    return summarize(
        workers,
        config=config,
        reports=reports,
        controller=controller,
        start=start,
        end=end,
        samples=samples,
        connections=connections,
        server_cpu=server_cpu,
        own_cpu=own_cpu,
        elapsed=elapsed,
        server_pid=server.pid,
        machine=machine,
    )


def summarize(
    workers: int,
    *,
    config: SoakConfig,
    reports: list[dict[str, Any]],
    controller: Controller,
    start: Sample,
    end: Sample,
    samples: list[Sample],
    connections: dict[int, int],
    server_cpu: dict[int, float],
    own_cpu: float,
    elapsed: float,
    server_pid: int,
    machine: dict[str, Any],
) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    unpinned: set[str] = set()
    latencies: list[float] = []
    examples: list[str] = []
    for report in reports:
        statuses.update(report["statuses"])
        versions.update(report["versions"])
        unpinned.update(report["unpinned_versions"])
        latencies.extend(report["latencies"])
        examples.extend(report["examples"])
    total = sum(r["requests"] for r in reports)
    non_200 = total - statuses[200]
    transport = sum(r["transport_errors"] for r in reports)
    mismatches = sum(r["mismatches"] for r in reports)
    rss_start, rss_end = sum(start.rss_kib.values()), sum(end.rss_kib.values())
    growth = (rss_end - rss_start) / rss_start if rss_start else float("inf")
    fd_start, fd_end = sum(start.fds.values()), sum(end.fds.values())
    fds_stable = set(start.fds) == set(end.fds) and all(
        abs(end.fds[pid] - start.fds[pid]) <= FD_SLACK for pid in start.fds
    )
    # versions current for SERVED_SECONDS or more must have been served (unpinned answers)
    changes = [*controller.timeline, (elapsed, "", "end")]
    held = {
        version
        for (t, version, _), (t_next, _, _) in itertools.pairwise(changes)
        if t_next - t >= SERVED_SECONDS
    }
    unseen = sorted(held - unpinned)
    load_cpu = sum(r["cpu_seconds"] for r in reports)
    load_wall = max((r["wall_seconds"] for r in reports), default=elapsed)
    failures = list(controller.failures)
    if non_200 or transport:
        failures.append(f"{non_200} answers other than 200, {transport} transport errors")
    if mismatches:
        failures.append(f"{mismatches} answers differ from the math of their version")
    if total == 0:
        failures.append("no answers at all")
    if controller.retrains != config.retrains:
        failures.append(f"{controller.retrains} of {config.retrains} retrains succeeded")
    if controller.activations != config.activations:
        failures.append(f"{controller.activations} of {config.activations} activations")
    if unseen:
        failures.append(f"versions current for >= {SERVED_SECONDS:g} s never served: {unseen}")
    if not growth < RSS_GROWTH_LIMIT:
        failures.append(f"RSS grew {growth:+.1%} (limit {RSS_GROWTH_LIMIT:.0%})")
    if not fds_stable:
        failures.append(f"open fds moved beyond +-{FD_SLACK}: {start.fds} -> {end.fds}")
    if set(start.rss_kib) != set(end.rss_kib) or sorted(server_pids(server_pid)) != sorted(
        start.rss_kib
    ):
        failures.append(
            f"server processes changed: {sorted(start.rss_kib)} -> {sorted(end.rss_kib)}"
        )
    return {
        "workers": workers,
        "config": asdict(config),
        "passed": not failures,
        "failures": failures,
        "seconds": elapsed,
        "requests": total,
        "requests_per_second": total / load_wall if load_wall else 0.0,
        "rows": sum(r["rows"] for r in reports),
        "statuses": dict(statuses),
        "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
        "non_200": non_200,
        "transport_errors": transport,
        "reconnects": sum(r["connects"] for r in reports) - config.connections,
        "mismatches": mismatches,
        "pinned": sum(r["pinned"] for r in reports),
        "examples": examples[:EXAMPLES],
        "latency_ms": {
            "p50": 1000 * percentile(latencies, 0.50),
            "p99": 1000 * percentile(latencies, 0.99),
            "max": 1000 * max(latencies, default=float("nan")),
        },
        "versions_seen": dict(versions),
        "versions_stored": len(controller.stored),
        "versions_held": sorted(held),
        "retrains": controller.retrains,
        "retrain_seconds_mean": statistics.fmean(controller.retrain_seconds)
        if controller.retrain_seconds
        else None,
        "activations": controller.activations,
        "timeline": controller.timeline,
        "rss_kib": {"start": start.rss_kib, "end": end.rss_kib},
        "rss_start_mib": rss_start / 1024,
        "rss_end_mib": rss_end / 1024,
        "rss_max_mib": max((sum(s.rss_kib.values()) for s in samples), default=rss_end) / 1024,
        "rss_growth": growth,
        "fds": {"start": start.fds, "end": end.fds},
        "fds_start": fd_start,
        "fds_end": fd_end,
        "fds_max": max((sum(s.fds.values()) for s in samples), default=fd_end),
        "warmup_at": start.t,
        "end_at": end.t,
        "connections_per_process": connections,
        "server_pids": sorted(start.rss_kib),
        "cpu_percent": {
            "server": {pid: 100 * s / elapsed for pid, s in server_cpu.items()},
            "load_generator": 100 * load_cpu / load_wall if load_wall else 0.0,
            "load_processes": len(reports),
            "controller": 100 * own_cpu / elapsed,
        },
        "machine": machine,
    }


# -- reporting ---------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    """The human summary of one run."""
    r, c, cpu, lat = result, result["config"], result["cpu_percent"], result["latency_ms"]
    server_cpu = ", ".join(f"pid {pid} {p:.0f}%" for pid, p in cpu["server"].items())
    held = ", ".join(f"pid {pid} {n}" for pid, n in r["connections_per_process"].items())
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items())) or "none"
    all_served = not set(r["versions_held"]) - set(r["versions_seen"])
    retrain = r["retrain_seconds_mean"]
    lines = [
        f"IRIS_WORKERS={r['workers']}: {r['seconds']:.1f} s under load, {c['connections']} "
        f"connections, {c['retrains']} retrains and {c['activations']} activations planned",
        f"  requests       {r['requests']} = {r['requests_per_second']:.0f} req/s "
        f"({r['rows']} rows; {r['pinned']} pinned to an earlier version)",
        f"  latency        p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
        f"max {lat['max']:.1f} ms",
        f"  statuses       {statuses}",
        f"  non-2xx        {r['non_2xx']} (transport errors {r['transport_errors']}, "
        f"reconnects {r['reconnects']})",
        f"  mismatches     {r['mismatches']} (every row's probabilities == predict_proba "
        "of the version the answer names)",
        f"  versions seen  {len(r['versions_seen'])} of {r['versions_stored']} stored; every "
        f"version current >= {SERVED_SECONDS:g} s served: {'yes' if all_served else 'NO'}",
        f"  retrains       {r['retrains']}/{c['retrains']} succeeded"
        + (f" (mean {retrain:.2f} s from POST to succeeded)" if retrain is not None else ""),
        f"  activations    {r['activations']}/{c['activations']}",
        f"  RSS            start {r['rss_start_mib']:.1f} MiB (t={r['warmup_at']:.1f} s), "
        f"end {r['rss_end_mib']:.1f} MiB (t={r['end_at']:.1f} s), growth "
        f"{r['rss_growth']:+.2%} (limit {RSS_GROWTH_LIMIT:.0%}); max {r['rss_max_mib']:.1f} MiB",
        f"  open fds       start {r['fds_start']}, end {r['fds_end']} (max {r['fds_max']}); per "
        f"process {r['fds']['start']} -> {r['fds']['end']}, slack +-{FD_SLACK}",
        f"  processes      {r['server_pids']}; connections held: {held}",
        f"  CPU            server {server_cpu}; load generator {cpu['load_generator']:.0f}% "
        f"({cpu['load_processes']} process), controller {cpu['controller']:.0f}% "
        "(% of one core over the run)",
        f"  machine        {r['machine']['cpus']} CPUs, {r['machine']['busy_percent']:.0f}% busy "
        f"over the run (everything on it); load average {r['machine']['loadavg_start']} -> "
        f"{r['machine']['loadavg_end']}",
    ]
    lines += [f"  example        {e}" for e in r["examples"]]
    lines += [f"  server log     {e}" for e in r.get("server_log_errors", [])]
    lines += [f"  FAIL           {f}" for f in r["failures"]]
    lines.append(f"  result         {'PASS' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)
