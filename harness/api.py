"""The API helpers tests and benchmarks share: in-process apps, jobs, versions, problems, rows.

Everything here speaks to the service through an ``httpx.Client``: a client of a real
server (``ServerProcess.client()``) or Starlette's ``TestClient`` (a subclass) around the
app in this process, so one ``wait_job`` serves both.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from harness.servers import ServerProcess, wait_for
from model.data import CLASSES, FEATURES

if TYPE_CHECKING:  # the app and its test client load only where a test builds one
    from fastapi.testclient import TestClient

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
VIRGINICA = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}
ENDED = frozenset({"succeeded", "failed", "cancelled"})
JOB_SECONDS = 60.0

# Small limits, so that tests reach them with small bodies.
LIMITS: dict[str, Any] = {"max_instances": 200, "max_body_bytes": 64 * 1024, "max_train_rows": 500}


# -- the app in this process -------------------------------------------------------------------


def app_client(data_dir: Path, **settings: Any) -> TestClient:
    """The app around ``Settings(data_dir, **settings)``, polling for new models quickly."""
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    settings = {"model_poll_seconds": 0.05, "grpc_port": 0} | settings
    return TestClient(
        create_app(Settings(data_dir=data_dir, **settings)), raise_server_exceptions=False
    )


def make_client(data_dir: Path, **overrides: Any) -> TestClient:
    """The app with ``TOKEN`` and the small ``LIMITS``; ``overrides`` win over both."""
    return app_client(data_dir, **({"api_token": TOKEN} | LIMITS | overrides))


# -- training jobs, over HTTP or in-process ----------------------------------------------------


def start_job(
    client: httpx.Client, body: dict[str, Any], headers: dict[str, str] | None = None
) -> str:
    """POST /train; asserts the 202 and its Location; the job's id."""
    response = client.post("/train", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    assert response.headers["location"] == f"/train/{job_id}"
    return job_id


def wait_job(
    client: httpx.Client,
    job_id: str,
    statuses: Collection[str] = ENDED,
    seconds: float = JOB_SECONDS,
    interval: float = 0.05,
) -> dict[str, Any]:
    """Poll GET /train/{id} until its status is one of ``statuses`` or it has ended.

    Asserts that the status reached is one of ``statuses`` (by default: any end).
    """

    def probe() -> dict[str, Any] | None:
        response = client.get(f"/train/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job if job["status"] in statuses or job["status"] in ENDED else None

    job = wait_for(probe, seconds, f"job {job_id} reaching {sorted(statuses)}", interval)
    assert job["status"] in statuses, job
    return job


def a_poor_version(client: httpx.Client, headers: dict[str, str], note: str) -> str:
    """A stored version other than stable, trained too little (one epoch of 2 hidden units)
    to agree with it everywhere: the one noted ``note``, trained now if there is none."""
    for found in client.get("/models").json()["models"]:
        if found["note"] == note:
            return str(found["version"])
    body = {"hyperparameters": {"epochs": 1, "hidden_units": 2}, "activate": False, "note": note}
    job = wait_job(client, start_job(client, body, headers), {"succeeded"})
    return str(job["model_version"])


def disagreeing_rows(
    client: httpx.Client, canary: str, stable: str
) -> tuple[list[dict[str, float]], list[str]]:
    """Shipped flowers the canary classes differently from stable, with stable's species: on
    them the canary is always wrong and stable always right."""
    rows = [{f: s[f] for f in FEATURES} for s in client.get("/datasets/iris").json()["samples"]]

    def labels(version: str) -> list[str]:
        body = {"instances": rows, "model_version": version}
        return [p["label"] for p in client.post("/predict", json=body).json()["predictions"]]

    ours, theirs = labels(canary), labels(stable)
    differ = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert differ, "the poor version agrees with stable on every flower"
    return [rows[i] for i in differ], [theirs[i] for i in differ]


def end_job(app: Any, job_id: str, seconds: float = 20.0) -> None:
    """End a job an in-process ``app`` started, before it trains: its process is killed.

    It is killed once its payload is in the pipe (the parent has closed its stdin), so the
    job ends failed within milliseconds rather than after a second of start-up and cancelling.
    """
    state = app.state.iris
    deadline = time.monotonic() + seconds
    while state.jobs.get(job_id)["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job_id} did not end within {seconds} s"
        with state.launcher.lock:
            child = state.launcher.children.get(job_id)
        if child is not None and child.stdin is not None and child.stdin.closed:
            child.kill()
        time.sleep(0.005)


# -- model versions ----------------------------------------------------------------------------


def served_version(client: httpx.Client) -> str:
    """The version a /predict answer names (the one requests are answered with now)."""
    response = client.post("/predict", json={"instances": [ROW]})
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def ready_version(server: ServerProcess) -> str:
    """The version /readyz of a server process names."""
    with server.client() as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


def serves(server: ServerProcess, version: str, seconds: float = 5.0) -> str:
    """Wait until the server's /readyz names ``version``: a worker follows an activation
    within its poll interval, not at the instant a job ends."""

    def probe() -> str | None:
        return version if ready_version(server) == version else None

    return wait_for(probe, seconds, f"serving {version}")


def serves_other_than(server: ServerProcess, version: str, seconds: float = 5.0) -> str:
    """Wait until the server's /readyz names a version other than ``version``; return it."""

    def probe() -> str | None:
        now = ready_version(server)
        return now if now != version else None

    return wait_for(probe, seconds, f"serving a version other than {version}")


# -- refusals ----------------------------------------------------------------------------------


def assert_problem(response: Any, status: int, *words: str) -> dict[str, Any]:
    """An RFC 9457 problem with ``status`` whose detail contains every one of ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    """An Open Inference Protocol error (``{"error": ...}``) naming every one of ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}, body
    for word in words:
        assert word in body["error"], body["error"]
    message: str = body["error"]
    return message


# -- request bodies ----------------------------------------------------------------------------

# Per-species centres of the Iris measurements (cm), for synthetic training sets.
CENTRES = {
    "setosa": (5.0, 3.4, 1.5, 0.25),
    "versicolor": (5.9, 2.8, 4.3, 1.3),
    "virginica": (6.6, 3.0, 5.6, 2.0),
}


def synthetic_samples(per_species: int, seed: int = 0) -> list[dict[str, Any]]:
    """Valid training rows: every measurement within (0, 100] cm, ``per_species`` of each."""
    rng = np.random.default_rng(seed)
    samples = []
    for species, centre in CENTRES.items():
        values = rng.normal(centre, 0.35, size=(per_species, 4)).clip(0.1, 100.0).round(2)
        for row in values.tolist():
            samples.append(dict(zip(FEATURES, row, strict=True)) | {"species": species})
    return samples


def instances(raw: np.ndarray[Any, Any]) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in raw.tolist()]


def probabilities(prediction: dict[str, Any]) -> list[float]:
    return [prediction["probabilities"][label] for label in CLASSES]


def canary_key(weight: float) -> str:
    """A routing key whose requests go to a canary of ``weight`` (its point below it)."""
    from service.rollout.plan import key_point

    return next(f"key-{i}" for i in range(1000) if key_point(f"key-{i}".encode()) < weight)
