"""``iris-serve`` as a real process: training jobs, model swaps across workers, crashes, signals.

Each test starts the console script on a free port of 127.0.0.1 with ``tmp_path`` as its data
directory and talks HTTP to it. Waits are bounded polls with deadlines; the server, its
workers and any training child are always stopped (see harness/servers.py). The server
logs are printed at teardown, so pytest shows them for a failing test.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from harness.api import (
    instances,
    probabilities,
    ready_version,
    served_version,
    start_job,
    synthetic_samples,
    wait_job,
)
from harness.servers import (
    DeadlineError,
    ServerProcess,
    cmdline,
    job_pid,
    job_row,
    marked_pids,
    post_fresh_connection,
    proc_alive,
    server_pool,
    wait_for,
    worker_pids,
)
from model.data import CLASSES, load_iris
from model.network import predict_proba
from model.persistence import ModelStore

pytestmark = pytest.mark.slow

TOKEN = "server-process-test-token-0123456789"
# Every worker checks models/CURRENT every IRIS_MODEL_POLL_SECONDS (0.2 s by default):
# a switch must reach all of them within this many seconds.
SWITCH_SECONDS = 1.0
JOB_SECONDS = 20.0
# Three flowers of each species from the shipped data, and two odd but valid ones.
IRIS = load_iris()
RAW = np.vstack(
    [
        IRIS.raw[[0, 1, 2, 50, 51, 52, 100, 101, 102]],
        np.array([[0.1, 100.0, 50.0, 0.5], [99.5, 0.2, 0.3, 42.0]]),
    ]
)
PREDICT_BODY = {"instances": instances(RAW)}
SMALL_JOB = {"hyperparameters": {"epochs": 30, "seed": 7}}
# Minutes of training (3000 rows, 256 hidden units, 10000 epochs): killed long before the end.
LONG_JOB = {
    "hyperparameters": {"epochs": 10_000, "hidden_units": 256, "batch_size": 16, "seed": 1},
    "dataset": {"samples": synthetic_samples(1000)},
}


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``iris-serve`` (``serve(workers=2, token=None, data_dir=...)``); always stopped."""
    with server_pool(tmp_path) as start_server:

        def start(
            workers: int = 1, token: str | None = TOKEN, data_dir: Path | None = None
        ) -> ServerProcess:
            env = {"IRIS_WORKERS": str(workers), "IRIS_LOG_LEVEL": "info"}
            if token is not None:
                env["IRIS_API_TOKEN"] = token
            return start_server(data_dir, env)

        yield start


def predict(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/predict", json=PREDICT_BODY)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_served(client: httpx.Client, version: str, deadline: float, what: str) -> None:
    """Poll /predict until it names ``version``; fails at ``deadline`` (time.monotonic())."""
    seen: list[str] = []
    while True:
        seen.append(served_version(client))
        if seen[-1] == version:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still serving {seen[-1]}, not {version} ({seen[-5:]})")
        time.sleep(0.02)


def running_child(server: ServerProcess, client: httpx.Client, job_id: str) -> int:
    """The pid of the job's training child, once it trains (an epoch done)."""

    def probe() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/train/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        return job if job["status"] == "running" and job["progress"]["epoch"] >= 1 else None

    wait_for(probe, JOB_SECONDS, f"job {job_id} training")
    pid = job_pid(server.jobs_db, job_id)
    assert pid is not None, job_row(server.jobs_db, job_id)
    assert "service.worker" in cmdline(pid), (pid, cmdline(pid))
    return pid


def all_fresh_connections_serve(
    server: ServerProcess, version: str, workers: int, at_least: int = 40
) -> int:
    """Send at least ``at_least`` predictions, each on a new connection, until every worker
    has answered some; every answer must name ``version``. Returns the requests sent."""
    pids = worker_pids(server.pid)
    assert len(pids) == workers, f"workers of {server.pid}: {pids}"
    answered: dict[int | None, int] = {}
    sent = 0
    while sent < at_least or len(answered) < workers:
        assert sent < 400, f"only workers {answered} answered {sent} new connections"
        status, body, worker = post_fresh_connection(server, "/predict", PREDICT_BODY, pids)
        sent += 1
        assert status == 200, body
        assert body["model_version"] == version, (
            f"request {sent} (worker {worker}) was answered by {body['model_version']}, "
            f"{SWITCH_SECONDS} s after the switch to {version}"
        )
        answered[worker] = answered.get(worker, 0) + 1
    assert None not in answered, f"could not tell which worker answered: {answered}"
    return sent


def active_models(text: str) -> dict[str | None, set[str]]:
    """iris_active_model_info: the versions set to 1, by worker pid (None: one process)."""
    from prometheus_client.parser import text_string_to_metric_families

    active: dict[str | None, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "iris_active_model_info" and sample.value == 1:
                active.setdefault(sample.labels.get("pid"), set()).add(sample.labels["version"])
    return active


def worker_keys(server: ServerProcess, workers: int) -> set[str | None]:
    """How iris_active_model_info names the server's workers: pids, or None for one."""
    if workers == 1:
        return {None}
    wait_for(lambda: len(worker_pids(server.pid)) == workers, 10.0, f"{workers} workers")
    return {str(pid) for pid in worker_pids(server.pid)}


def switched(client: httpx.Client, version: str, keys: set[str | None], what: str) -> None:
    """Wait until iris_active_model_info says every worker in ``keys`` serves ``version``
    and nothing else; fails unless that happens within SWITCH_SECONDS, the promised bound."""
    expected = {key: {version} for key in keys}
    seen: list[dict[str | None, set[str]]] = []

    def probe() -> bool:
        seen.append(active_models(client.get("/metrics").text))
        return seen[-1] == expected

    try:
        wait_for(probe, SWITCH_SECONDS, f"every worker serving {version} {what}", interval=0.02)
    except DeadlineError as error:
        raise AssertionError(f"{error}; iris_active_model_info said {seen[-1]}") from None


def metric_value(text: str, name: str, labels: dict[str, str]) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# -- 1. train, switch, roll back; the token ------------------------------------------------------


def test_training_job_switches_the_served_model_and_activate_rolls_it_back(
    serve: Callable[..., ServerProcess],
) -> None:
    server = serve()
    old = ready_version(server)
    with server.client() as client:
        assert served_version(client) == old
        job_id = start_job(client, SMALL_JOB, server.auth())

        job = wait_job(client, job_id, ("succeeded",))
        switched_by = time.monotonic() + SWITCH_SECONDS
        new = job["model_version"]
        assert new is not None, job
        assert new != old, job
        assert job["activated"] is True, job
        assert job["progress"]["epoch"] == job["progress"]["epochs"] == 30, job
        wait_served(client, new, switched_by, "after the job succeeded")

        response = client.post(f"/models/{old}/activate", headers=server.auth())
        assert response.status_code == 200, response.text
        wait_served(client, old, time.monotonic() + SWITCH_SECONDS, f"after activating {old} again")
        assert client.get("/models").json()["current"] == old


def test_fresh_data_dir_generates_a_private_token_that_guards_mutations(
    serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "fresh"
    server = serve(token=None, data_dir=data_dir)
    token_file = data_dir / "api_token"
    assert token_file.is_file()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text(encoding="ascii").strip()
    assert len(token) >= 32
    version = ready_version(server)

    with server.client() as client:
        for headers in ({}, server.auth("not-the-token"), {"Authorization": token}):
            response = client.post(f"/models/{version}/activate", headers=headers)
            assert response.status_code == 401, (headers, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
            assert response.headers["content-type"].startswith("application/problem+json")
        response = client.post("/train", json=SMALL_JOB)
        assert response.status_code == 401, response.text
        assert client.get("/train").json()["jobs"] == []

        response = client.post(f"/models/{version}/activate", headers=server.auth(token))
        assert response.status_code == 200, response.text
        assert response.json()["current"] == version


# -- 2. two workers ----------------------------------------------------------------------------


def test_both_workers_switch_after_training_and_after_activate(
    serve: Callable[..., ServerProcess],
) -> None:
    server = serve(workers=2)
    old = ready_version(server)
    keys = worker_keys(server, 2)
    predictions = 0
    with server.client() as client:
        job_id = start_job(client, SMALL_JOB, server.auth())
        new = wait_job(client, job_id, ("succeeded",))["model_version"]
        # within the promised switch time, every worker says it serves the new version; then
        # every fresh connection must be answered by it
        switched(client, new, keys, "after the job succeeded")
        predictions += all_fresh_connections_serve(server, new, workers=2)

        response = client.post(f"/models/{old}/activate", headers=server.auth())
        assert response.status_code == 200, response.text
        switched(client, old, keys, f"after activating {old} again")
        predictions += all_fresh_connections_serve(server, old, workers=2)

        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    # Both workers answered: only merged multiprocess counters add up to every prediction.
    counted = metric_value(
        response.text,
        "iris_http_requests_total",
        {"route": "/predict", "method": "POST", "status": "200"},
    )
    lines = [line for line in response.text.splitlines() if "iris_http_requests_total" in line]
    assert counted == predictions, (
        f"/predict counted {counted} times, {predictions} were answered: {lines}"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_active_model_metric_names_the_version_each_worker_serves(
    serve: Callable[..., ServerProcess], workers: int
) -> None:
    server = serve(workers=workers)
    old = ready_version(server)
    wait_for(lambda: len(worker_pids(server.pid)) == workers, 10.0, "workers started")
    pids = {str(pid) for pid in worker_pids(server.pid)} if workers > 1 else {None}
    with server.client() as client:
        job_id = start_job(client, SMALL_JOB, server.auth())
        new = wait_job(client, job_id, ("succeeded",))["model_version"]
        switched(client, new, pids, f"after the job activated {new} (was {old})")

        response = client.post(f"/models/{old}/activate", headers=server.auth())
        assert response.status_code == 200, response.text
        switched(client, old, pids, f"after POST /models/{old}/activate (was {new})")


# -- 3. the training child killed ----------------------------------------------------------------


def test_killed_training_process_fails_its_job_and_keeps_the_old_model(
    serve: Callable[..., ServerProcess],
) -> None:
    server = serve()
    old = ready_version(server)
    with server.client() as client:
        job_id = start_job(client, LONG_JOB, server.auth())
        child = running_child(server, client, job_id)
        os.kill(child, signal.SIGKILL)

        job = wait_job(client, job_id, ("failed",), seconds=10.0)
        assert "SIGKILL" in (job["error"] or ""), job
        assert job["model_version"] is None, job
        assert served_version(client) == old
        models = client.get("/models").json()
        assert models["current"] == old
        assert [m["version"] for m in models["models"]] == [old]
        # The failed job no longer holds the one-job-at-a-time slot.
        second = start_job(client, SMALL_JOB, server.auth())
        assert wait_job(client, second, ("succeeded",))["status"] == "succeeded"


# -- 4. predictions during a swap ----------------------------------------------------------------


def test_predictions_during_a_swap_each_match_the_one_version_they_name(
    serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = serve(workers=2)
    old = ready_version(server)
    stop = threading.Event()
    answers: list[list[tuple[int, Any]]] = [[] for _ in range(4)]

    def client_loop(out: list[tuple[int, Any]]) -> None:
        hard_stop = time.monotonic() + 15.0
        with server.client() as client:
            while not stop.is_set() and time.monotonic() < hard_stop:
                try:
                    response = client.post("/predict", json=PREDICT_BODY)
                except httpx.HTTPError as error:
                    out.append((-1, repr(error)))
                    continue
                body = response.json() if response.status_code == 200 else response.text
                out.append((response.status_code, body))

    def latest(out: list[tuple[int, Any]]) -> str | None:
        if not out or out[-1][0] != 200:
            return None
        version: str = out[-1][1]["model_version"]
        return version

    threads = [threading.Thread(target=client_loop, args=(out,)) for out in answers]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(len(out) >= 5 for out in answers), 10.0, "every client answered")
        with server.client() as client:
            job_id = start_job(
                client, {"hyperparameters": {"epochs": 150, "seed": 5}}, server.auth()
            )
            new = wait_job(client, job_id, ("succeeded",))["model_version"]
        wait_for(
            lambda: all(latest(out) == new for out in answers),
            SWITCH_SECONDS + 1.0,
            f"every client served {new}",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(20.0)
    assert not any(thread.is_alive() for thread in threads)

    store = ModelStore(tmp_path / "data" / "models")
    expected = {v: predict_proba(store.load(v).model, RAW).tolist() for v in (old, new)}
    assert expected[old] != expected[new]
    seen: dict[str, int] = {}
    for out in answers:
        for status, body in out:
            assert status == 200, body
            version = body["model_version"]
            assert version in expected, f"{version} is neither {old} nor {new}"
            got = [probabilities(p) for p in body["predictions"]]
            assert got == expected[version], f"probabilities are not those of {version}"
            assert [p["label"] for p in body["predictions"]] == [
                CLASSES[int(np.argmax(row))] for row in expected[version]
            ]
            seen[version] = seen.get(version, 0) + 1
    assert set(seen) == {old, new}, seen


# -- 5. the server killed while a job trains ------------------------------------------------------


def test_training_process_exits_when_the_server_is_killed_and_the_job_is_failed_on_restart(
    serve: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = serve(data_dir=data_dir)
    old = ready_version(first)
    with first.client() as client:
        job_id = start_job(client, LONG_JOB, first.auth())
        child = running_child(first, client, job_id)

    assert first.proc is not None
    first.proc.kill()
    first.proc.wait(5.0)
    wait_for(lambda: not proc_alive(child), 5.0, f"training process {child} exiting by itself")

    second = serve(data_dir=data_dir)
    assert ready_version(second) == old
    with second.client() as client:
        job = client.get(f"/train/{job_id}").json()
        assert job["status"] == "failed", job
        assert "interrupted" in (job["error"] or ""), job
        assert job["model_version"] is None, job
        assert served_version(client) == old
        assert client.get("/models").json()["current"] == old


# -- 6. SIGTERM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_stops_the_server_and_its_training_process_with_exit_code_0(
    serve: Callable[..., ServerProcess], workers: int
) -> None:
    server = serve(workers=workers)
    with server.client() as client:
        job_id = start_job(client, LONG_JOB, server.auth())
        child = running_child(server, client, job_id)

    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(10.0)
    except Exception:
        pytest.fail("iris-serve still runs 10 s after SIGTERM")
    elapsed = time.monotonic() - started

    assert not proc_alive(child), f"training process {child} outlived the server"
    # multiprocessing's resource tracker may take a moment to see its parent gone
    deadline = time.monotonic() + 3.0
    while (left := {pid: cmdline(pid) for pid in marked_pids(server.marker)}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert not left, f"processes of the server outlived it: {left}"
    row = job_row(server.jobs_db, job_id)
    assert row["status"] == "failed", row
    assert "interrupted" in (row["error"] or ""), row
    assert code == 0, f"exit code {code} after SIGTERM ({elapsed:.1f} s)"
