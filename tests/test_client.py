"""client/: the typed HTTP client against a real ``iris-serve`` process (and small stubs)."""

from __future__ import annotations

import ast
import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from iris_client import (
    AsyncIrisClient,
    AuthenticationError,
    ConflictError,
    ConnectionFailedError,
    InputError,
    IrisClient,
    Job,
    LimitsWarning,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
)
from iris_client.types import DEFAULT_LIMITS

from harness.api import instances, ready_version, serves
from harness.clients import (
    JOB_SECONDS,
    LONG_JOB,
    MAX_INSTANCES,
    TOKEN,
    CountingTransport,
    Stub,
    client_server,
    expected_probabilities,
    flowers,
    species_of,
    wait_idle,
    wait_running,
    write_csv,
)
from harness.servers import ROOT, ServerProcess, free_port
from model.data import CLASSES
from model.network import backward, forward
from model.persistence import ModelStore

pytestmark = pytest.mark.slow
FAST_RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with client_server(tmp_path_factory.mktemp("client")) as started:
        yield started


@pytest.fixture
def iris(server: ServerProcess) -> Iterator[IrisClient]:
    wait_idle(server)
    with IrisClient(server.url, token=TOKEN, retry=FAST_RETRY) as client:
        yield client


def probabilities(answer: Any) -> Any:
    return np.array([[p.probabilities[c] for c in CLASSES] for p in answer])


# -- the package's boundaries -------------------------------------------------------------------


def test_client_imports_no_service_or_model_code() -> None:
    code = (
        "import sys, iris_client, iris_client.cli, iris_client.sync, iris_client.aio\n"
        "import iris_client.csvio\n"
        "from iris_client import IrisClient, AsyncIrisClient\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'service', 'model', 'fastapi', 'pydantic', 'uvicorn', 'starlette'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"client imported {out.stdout.strip()}"
    for path in (ROOT / "client" / "iris_client").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in ("service", "model"), f"{path.name}: {name}"


def test_importing_the_command_line_loads_neither_httpx_nor_rich() -> None:
    code = (
        "import sys, iris_client, iris_client.cli\n"
        "print(','.join(sorted(m for m in ('httpx', 'rich', 'numpy') if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_a_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        IrisClient("localhost:8000")


# -- limits, predict -----------------------------------------------------------------------------


def test_limits_are_read_from_the_server(iris: IrisClient) -> None:
    limits = iris.limits()
    assert limits.published
    assert limits.max_instances == MAX_INSTANCES
    assert limits.max_body_bytes == 16 * 2**20
    assert limits.max_train_rows == 100_000


def test_predict_mappings_returns_typed_predictions(
    server: ServerProcess, iris: IrisClient
) -> None:
    raw = flowers(3)
    answer = iris.predict(instances(raw))
    assert len(answer) == 3
    expected = expected_probabilities(server, answer.model_version, raw)
    assert (probabilities(answer) == expected).all()
    assert answer.labels == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert [p.class_index for p in answer] == expected.argmax(axis=1).tolist()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_large_array_is_split_by_max_instances_and_reassembled_in_order(
    server: ServerProcess, concurrency: int
) -> None:
    raw = flowers(1234, seed=concurrency)
    transport = CountingTransport()
    seen: list[tuple[int, int]] = []
    with IrisClient(server.url, transport=transport) as iris:
        answer = iris.predict(
            raw, concurrency=concurrency, progress=lambda d, t: seen.append((d, t))
        )
    posts = [body for method, path, body in transport.requests if path == "/predict"]
    assert len(posts) == math.ceil(1234 / MAX_INSTANCES)
    assert all(1 <= len(body["instances"]) <= MAX_INSTANCES for body in posts)
    assert sum(len(body["instances"]) for body in posts) == 1234
    # every chunk after the first asks for the version that answered the first
    assert all(body.get("model_version") == answer.model_version for body in posts[1:])
    assert len(answer) == 1234
    expected = expected_probabilities(server, answer.model_version, raw)
    assert (probabilities(answer) == expected).all()
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (1234, 1234)


def test_predict_reads_a_csv_path_ignoring_other_columns(
    server: ServerProcess, iris: IrisClient, tmp_path: Path
) -> None:
    raw = flowers(120, seed=5)
    path = write_csv(tmp_path / "f.csv", raw, species_of(120), note="x")
    answer = iris.predict(path)
    assert (
        probabilities(answer) == expected_probabilities(server, answer.model_version, raw)
    ).all()
    answer_str = iris.predict(str(path))
    assert probabilities(answer_str).tolist() == probabilities(answer).tolist()


def test_a_bad_row_in_a_later_chunk_is_named_by_its_index_in_the_whole_input(
    iris: IrisClient,
) -> None:
    raw = flowers(200, seed=2)
    raw[123, 3] = -1.0  # chunk 3 (rows 100-149), its row 23
    with pytest.raises(ValidationError) as caught:
        iris.predict(raw, concurrency=1)
    error = caught.value
    assert error.status == 422
    assert error.title in ("Unprocessable Entity", "Unprocessable Content")  # by Python version
    assert "instances.123.petal_width" in error.detail
    assert error.errors[0].loc == ("instances", 123, "petal_width")


def test_predict_takes_rows_of_four_numbers_in_column_order(
    server: ServerProcess, iris: IrisClient
) -> None:
    raw = flowers(4, seed=13)
    answer = iris.predict([tuple(row) for row in raw.tolist()])
    assert (
        probabilities(answer) == expected_probabilities(server, answer.model_version, raw)
    ).all()


def test_input_that_cannot_be_sent_raises_input_error(iris: IrisClient, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"shape \(n, 4\)"):
        iris.predict(np.zeros((3, 5)))
    with pytest.raises(InputError, match=r"row 1: .*four numbers in the order sepal_length"):
        iris.predict([[5.1, 3.5, 1.4, 0.2], [5.1, 3.5, 1.4]])
    bad = tmp_path / "bad.csv"
    bad.write_text("sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,x,4\n")
    with pytest.raises(InputError, match="line 3: petal_length 'x' is not a number"):
        iris.predict(bad)
    bad.write_text("sepal_length,sepal_width,petal_length\n1,2,3\n")
    with pytest.raises(InputError, match="line 1: the header lacks petal_width"):
        iris.predict(bad)
    with pytest.raises(InputError, match="cannot read"):
        iris.predict(tmp_path / "missing.csv")


# -- gradients -----------------------------------------------------------------------------------


def test_gradients_match_the_model_cores_backward(server: ServerProcess, iris: IrisClient) -> None:
    raw = flowers(7, seed=4)
    labels = ["setosa", 1, "virginica", 0, 2, "versicolor", 0]
    answer = iris.gradients(raw, labels, reduction="none", include=["activations", "input"])
    stored = ModelStore(server.data_dir / "models").load(answer.model_version)
    y = np.array([CLASSES.index(v) if isinstance(v, str) else v for v in labels])
    cache = forward(stored.model.params, stored.model.standardizer.transform(raw))
    grads = backward(stored.model.params, cache, y, "none")
    assert answer.reduction == "none"
    assert isinstance(answer.loss, np.ndarray)
    assert answer.loss.shape == (7,)
    np.testing.assert_allclose(answer.gradients.W1, grads.params.W1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(answer.gradients.b2, grads.params.b2, rtol=1e-12, atol=1e-15)
    assert answer.activations is not None
    np.testing.assert_allclose(answer.activations.o_s, cache.o_s, rtol=1e-12)
    assert answer.input_gradients is not None
    assert answer.input_gradients.x.shape == (7, 4)
    assert answer.intermediates is None
    mean = iris.gradients(raw, labels)
    assert isinstance(mean.loss, float)
    assert mean.gradients.W1.ndim == 2


def test_a_bad_label_is_a_validation_error_with_field_errors(iris: IrisClient) -> None:
    with pytest.raises(ValidationError) as caught:
        iris.gradients(flowers(2), ["setosa", "daisy"])
    assert caught.value.errors
    assert any(e.loc[:2] == ("labels", 1) for e in caught.value.errors)


# -- training jobs, models -----------------------------------------------------------------------


def test_train_wait_reports_progress_then_activate_rolls_back(
    server: ServerProcess, iris: IrisClient
) -> None:
    before = iris.models().current
    assert before is not None
    seen: list[Job] = []
    handle = iris.train({"epochs": 60, "validation_fraction": 0.2, "seed": 11})
    assert handle.job.status in ("queued", "running")
    job = handle.wait(progress=seen.append, timeout=JOB_SECONDS, interval=0.05)
    assert job.status == "succeeded"
    assert job.activated
    assert job.ok
    assert not job.held_back
    assert job.model_version is not None
    assert job.progress.epoch == 60
    assert seen[-1] == job
    epochs = [j.progress.epoch for j in seen]
    assert epochs == sorted(epochs)
    assert job.metrics is not None
    assert 0 <= job.metrics["validation_accuracy"] <= 1
    models = iris.models()
    assert models.current == job.model_version
    assert {m.version for m in models.models} >= {before, job.model_version}
    assert serves(server, job.model_version) == job.model_version
    rolled = iris.activate(before)
    assert rolled.current == before
    assert iris.models().current == before
    assert iris.predict(flowers(1)).model_version == before


def test_the_quality_gate_holding_a_version_back_is_reported(iris: IrisClient) -> None:
    handle = iris.train(
        {"epochs": 1, "validation_fraction": 0.2, "learning_rate": 0.001},
        min_validation_accuracy=1.0,
    )
    job = handle.wait(timeout=JOB_SECONDS, interval=0.05)
    assert job.status == "succeeded"
    assert job.held_back
    assert not job.ok
    assert not job.activated
    assert job.metrics is not None
    assert "quality_gate" in job.metrics


def test_train_on_samples_from_a_csv(iris: IrisClient, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", flowers(30, seed=8), species_of(30))
    job = iris.train({"epochs": 5}, data=path, activate=False).wait(timeout=JOB_SECONDS)
    assert job.status == "succeeded"
    assert job.ok
    assert not job.activated
    assert job.dataset == {"source": "request", "rows": 30}
    with pytest.raises(InputError, match="the header lacks species"):
        iris.train(data=write_csv(tmp_path / "nospecies.csv", flowers(30)))


def test_cancel_conflicts_timeout_and_delete(server: ServerProcess, iris: IrisClient) -> None:
    handle = iris.train(dict(LONG_JOB))
    wait_running(server, handle.job_id)
    with pytest.raises(ConflictError) as conflict:
        iris.train({"epochs": 5})
    assert conflict.value.job_id == handle.job_id
    with pytest.raises(ConflictError):
        iris.delete_job(handle.job_id)  # its record stays while it runs
    with pytest.raises(WaitTimeoutError, match=handle.job_id):
        handle.wait(timeout=0.2)
    assert handle.cancel().status in ("running", "cancelled")
    job = handle.wait(timeout=JOB_SECONDS)
    assert job.status == "cancelled"
    assert not job.ok
    assert handle.job_id in [j.job_id for j in iris.jobs(limit=5)]
    iris.delete_job(handle.job_id)
    with pytest.raises(NotFoundError):
        iris.job(handle.job_id)
    with pytest.raises(InputError, match="not a job id"):
        iris.job("../models")


def test_a_wrong_token_is_an_authentication_error_and_starts_nothing(
    server: ServerProcess,
) -> None:
    with IrisClient(server.url, token="wrong") as iris:
        before = len(iris.jobs())
        with pytest.raises(AuthenticationError) as caught:
            iris.train({"epochs": 5})
        assert caught.value.status == 401
        with pytest.raises(AuthenticationError):
            iris.activate(ready_version(server))
        assert len(iris.jobs()) == before


def test_a_version_keeps_its_note_and_job_and_delete_model_removes_it(
    server: ServerProcess, iris: IrisClient
) -> None:
    current = iris.models().current
    assert current is not None
    job = iris.train({"epochs": 5}, activate=False, note="kept for a day").wait(timeout=JOB_SECONDS)
    assert job.note == "kept for a day"
    assert job.model_version is not None
    [summary] = [m for m in iris.models().models if m.version == job.model_version]
    assert (summary.job_id, summary.note) == (job.job_id, "kept for a day")
    assert summary.data_sha256 is not None
    assert len(summary.data_sha256) == 64
    detail = iris.model(job.model_version)
    assert (detail.version, detail.active, detail.job_id) == (job.model_version, False, job.job_id)
    assert detail.note == "kept for a day"
    assert detail.data_sha256 == summary.data_sha256
    assert detail.hyperparameters is not None
    assert detail.hyperparameters["epochs"] == 5
    assert detail.metadata["weights_sha256"] == detail.weights_sha256
    with pytest.raises(ConflictError, match="current version"):
        iris.delete_model(current)
    with IrisClient(server.url, token="wrong") as intruder, pytest.raises(AuthenticationError):
        intruder.delete_model(job.model_version)
    iris.delete_model(job.model_version)
    assert job.model_version not in [m.version for m in iris.models().models]
    with pytest.raises(NotFoundError):
        iris.model(job.model_version)
    with pytest.raises(NotFoundError):
        iris.delete_model(job.model_version)
    with pytest.raises(InputError, match="not a model version"):
        iris.delete_model("../train")


def test_activating_an_unknown_version_is_not_found(iris: IrisClient) -> None:
    with pytest.raises(NotFoundError):
        iris.activate("20200101T000000.000000Z-deadbeef")


def test_health_of_a_ready_server(server: ServerProcess, iris: IrisClient) -> None:
    health = iris.health()
    assert health.alive
    assert health.ready
    assert health.model_version == ready_version(server)


# -- the asyncio twin ----------------------------------------------------------------------------


def test_the_async_client_does_what_the_blocking_one_does(
    server: ServerProcess, iris: IrisClient
) -> None:
    raw = flowers(321, seed=9)
    expected = iris.predict(raw)

    async def scenario() -> tuple[Any, Job, list[int], Any]:
        async with AsyncIrisClient(server.url, token=TOKEN) as airis:
            answer = await airis.predict(raw, concurrency=3)
            epochs: list[int] = []

            async def progress(job: Job) -> None:
                epochs.append(job.progress.epoch)

            handle = await airis.train({"epochs": 30, "seed": 2}, activate=False, note="async")
            job = await handle.wait(progress=progress, timeout=JOB_SECONDS, interval=0.05)
            jobs = await airis.jobs(limit=3)
            assert job.job_id in [j.job_id for j in jobs]
            assert (await airis.job(job.job_id)).status == "succeeded"
            assert (await airis.health()).ready
            assert (await airis.limits()).max_instances == MAX_INSTANCES
            models = await airis.models()
            assert job.model_version is not None
            detail = await airis.model(job.model_version)
            assert (detail.job_id, detail.note) == (job.job_id, "async")
            await airis.delete_model(job.model_version)
            with pytest.raises(NotFoundError):
                await airis.model(job.model_version)
            return answer, job, epochs, models

    answer, job, epochs, models = asyncio.run(scenario())
    assert answer == expected
    assert job.status == "succeeded"
    assert job.ok
    assert job.note == "async"
    assert epochs[-1] == 30
    assert job.model_version in [m.version for m in models.models]
    assert job.model_version not in [m.version for m in iris.models().models]


# -- failures: retries, a server that goes away, an older server ---------------------------------


def test_an_unreachable_server_is_a_connection_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with IrisClient(url, retry=FAST_RETRY) as iris:
        with pytest.raises(ConnectionFailedError, match=f"cannot reach {url}"):
            iris.predict(flowers(2))
        with pytest.raises(ConnectionFailedError):
            iris.train()


def test_a_broken_connection_is_retried_for_predict_but_train_is_sent_once() -> None:
    with Stub("hangup") as stub, IrisClient(stub.url, token="t", retry=FAST_RETRY) as iris:
        with pytest.raises(ConnectionFailedError, match="broke before an answer"):
            iris.gradients(flowers(1), ["setosa"])
        assert stub.hits == [("POST", "/gradients")] * 4
        stub.hits.clear()
        with pytest.raises(ConnectionFailedError):
            iris.train({"epochs": 5})
        assert stub.hits == [("POST", "/train")]
        stub.hits.clear()
        with pytest.raises(ConnectionFailedError):
            iris.activate("20200101T000000.000000Z-deadbeef")
        assert len(stub.hits) == 1


@dataclass(frozen=True)
class SlowBackoff(RetryPolicy):
    """A policy whose own backoff is 10 s (no jitter): a retry that waits it is obvious."""

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        return 10.0 if retry_after is None else super().delay(retry, retry_after)


def test_503_is_retried_honouring_retry_after_for_idempotent_calls_only() -> None:
    with (
        Stub("unavailable") as stub,
        IrisClient(stub.url, token="t", retry=SlowBackoff(attempts=3)) as iris,
    ):
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="not ready: loading") as caught:
            iris.jobs()
        took = time.monotonic() - started
        print(f"\nthree attempts honouring Retry-After: 0 took {took * 1000:.0f} ms")
        # Retry-After: 0 is honoured instead of the policy's backoff. A bound, not a speed
        # target: one backoff of the policy would take 10 s (or leave no time for 3 attempts).
        assert took < 5.0
        assert caught.value.status == 503
        assert caught.value.retry_after == 0
        assert stub.hits == [("GET", "/train")] * 3
        stub.hits.clear()
        with pytest.raises(UnavailableError):
            iris.train()
        assert stub.hits == [("POST", "/train")]


def test_an_older_server_without_limits_gets_the_documented_defaults_and_a_warning() -> None:
    with Stub("old") as stub, IrisClient(stub.url) as iris:
        with pytest.warns(LimitsWarning, match="publishes no limits"):
            answer = iris.predict(flowers(3))
        assert iris.limits() == DEFAULT_LIMITS
        assert not iris.limits().published
        assert answer.labels == ["setosa"] * 3


def test_a_server_killed_mid_predict_gives_a_connection_error(tmp_path: Path) -> None:
    with client_server(tmp_path) as doomed:

        def kill_after_first_chunk(done: int, total: int) -> None:
            if doomed.proc is not None and doomed.proc.poll() is None:
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.proc.wait(5)

        with (
            IrisClient(doomed.url, retry=FAST_RETRY) as iris,
            pytest.raises(ConnectionFailedError, match=doomed.url),
        ):
            iris.predict(flowers(500), concurrency=1, progress=kill_after_first_chunk)
