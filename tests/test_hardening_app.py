"""Issue 10 hardening through the ASGI app (lifespan included): file modes and the token,
paths kept out of answers, answer-size and training-time bounds, the model listing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import service.launcher
from harness.api import ROW, wait_job
from harness.api import app_client as make_client
from harness.models import random_model
from harness.servers import job_pid, proc_alive, wait_for
from model.data import FEATURES, load_iris
from model.persistence import ModelStore
from service.inference import answer_values

TOKEN = "app-hardening-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- file modes and the token -----------------------------------------------------------------


def test_data_directory_token_and_databases_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with make_client(data_dir) as client:
        assert client.get("/train").status_code == 200
        assert mode(data_dir) == 0o700
        assert mode(data_dir / "api_token") == 0o600
        assert mode(data_dir / "monitoring.sqlite3") == 0o600
        for base in ("jobs.sqlite3", "monitoring.sqlite3"):
            for name in (base, f"{base}-wal", f"{base}-shm"):
                if (data_dir / name).exists():
                    assert mode(data_dir / name) == 0o600, name


def test_the_generated_token_is_logged_once_by_the_process_that_created_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iris.auth")
    for _ in range(2):
        with make_client(tmp_path):
            pass
    token = (tmp_path / "api_token").read_text().strip()
    assert sum(token in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize("file_mode", [0o644, 0o620, 0o604])
def test_a_token_file_open_to_group_or_others_is_refused_naming_chmod_600(
    tmp_path: Path, file_mode: int
) -> None:
    token_file = tmp_path / "api_token"
    token_file.write_text("a-token-someone-else-may-have-read\n")
    token_file.chmod(file_mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    result = subprocess.run(
        [sys.executable, "-m", "service"],
        env=env | {"IRIS_DATA_DIR": str(tmp_path), "IRIS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(token_file) in lines[0]
    assert f"chmod 600 {token_file}" in lines[0]
    with pytest.raises(RuntimeError, match="chmod 600"), make_client(tmp_path):
        pass


# -- no paths in answers ----------------------------------------------------------------------


def test_answers_name_the_data_directory_data_dir_and_the_log_keeps_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    with make_client(data_dir, api_token=TOKEN):
        pass
    (data_dir / "models" / "CURRENT").unlink()
    (data_dir / "models" / "ACTIVATIONS").unlink()
    (data_dir / "jobs.sqlite3").unlink()
    (data_dir / "jobs.sqlite3").mkdir()  # the jobs database cannot be opened
    caplog.set_level(logging.INFO)
    with make_client(data_dir, api_token=TOKEN) as client:
        answers = [
            client.get("/readyz"),
            client.get("/v2/health/ready"),
            client.get("/train"),
            client.post("/predict", json={"instances": [ROW]}),
        ]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert str(tmp_path) not in answer.text, answer.text
        assert "DATA_DIR/" in answer.text, answer.text
    logged = caplog.text
    assert f"{data_dir.resolve()}/models/CURRENT is missing" in logged
    assert f"{data_dir.resolve()}/jobs.sqlite3" in logged


# -- the size of a /gradients answer ----------------------------------------------------------


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server whose active model has 1024 hidden units."""
    data_dir = tmp_path_factory.mktemp("wide")
    ModelStore(data_dir / "models").save(random_model(hidden=1024), {}, activate=True)
    with make_client(data_dir, api_token=TOKEN, max_body_bytes=2**24) as client:
        yield client


def gradients_body(n: int, reduction: str, include: list[str]) -> dict[str, Any]:
    raw = load_iris().raw
    rows = [dict(zip(FEATURES, map(float, raw[i % 150]), strict=True)) for i in range(n)]
    return {"instances": rows, "labels": [0] * n, "reduction": reduction, "include": include}


def test_a_gradients_answer_over_the_limit_is_refused_before_any_work(wide: TestClient) -> None:
    every = ["activations", "intermediates", "input"]
    body = gradients_body(1000, "none", every)
    answer = wide.post("/gradients", json=body)
    assert answer.status_code == 422, answer.status_code
    detail = answer.json()["detail"]
    # dW1 db1 dW2 db2 per row, the loss per row, then activations, intermediates, input
    expected = 1000 * (8 * 1024 + 3) + 1000 + 1000 * (10 + 2048) + 1000 * (3 + 2048) + 8000
    for words in (str(expected), "IRIS_MAX_ANSWER_VALUES", "fewer instances", "'mean'"):
        assert words in detail, detail
    # What the detail suggests fits: the mean gradients and the input gradients.
    fits = wide.post("/gradients", json=gradients_body(1000, "mean", ["input"]))
    assert fits.status_code == 200, fits.text
    assert len(fits.content) < 2_000_000 * 25


def test_answer_values_counts_every_number_of_a_real_answer(wide: TestClient) -> None:
    for reduction in ("none", "mean"):
        body = gradients_body(3, reduction, ["activations", "intermediates", "input"])
        answer = wide.post("/gradients", json=body).json()
        expected = answer_values(3, 1024, reduction, frozenset(body["include"]))
        assert count_numbers(answer) == expected


def count_numbers(value: Any) -> int:
    if isinstance(value, dict):
        return sum(count_numbers(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_numbers(v) for v in value)
    return 1 if isinstance(value, (int, float)) else 0


# -- training jobs: time limit, no improvement ------------------------------------------------

LONG_JOB = {"hyperparameters": {"epochs": 10_000, "hidden_units": 256, "seed": 1}}


def test_a_job_past_the_training_time_limit_fails_naming_the_setting(tmp_path: Path) -> None:
    with make_client(tmp_path, api_token=TOKEN, max_training_seconds=1.0) as client:
        served = client.get("/readyz").json()["model_version"]
        started = time.monotonic()
        job_id = client.post("/train", json=LONG_JOB, headers=AUTH).json()["job_id"]
        job = wait_job(client, job_id, seconds=20.0)
        print(
            f"a 10,000-epoch job under a 1 s limit ended {job['status']} after "
            f"{time.monotonic() - started:.1f} s at epoch {job['progress']['epoch']}"
        )
        assert job["status"] == "failed", job
        assert "IRIS_MAX_TRAINING_SECONDS" in job["error"], job
        assert job["model_version"] is None
        assert client.get("/readyz").json()["model_version"] == served


def test_a_child_that_overruns_the_limit_by_the_grace_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.launcher, "KILL_GRACE_SECONDS", 1.0)
    with make_client(tmp_path, api_token=TOKEN, max_training_seconds=1.0) as client:
        job_id = client.post("/train", json=LONG_JOB, headers=AUTH).json()["job_id"]
        pid = wait_for(lambda: job_pid(tmp_path / "jobs.sqlite3", job_id), 20.0, "child pid")
        os.kill(pid, signal.SIGSTOP)  # never reaches an epoch boundary again
        try:
            job = wait_job(client, job_id, seconds=20.0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert job["status"] == "failed", job
        assert "IRIS_MAX_TRAINING_SECONDS" in job["error"], job
        assert "killed" in job["error"], job
        assert not proc_alive(pid)


def test_a_job_whose_loss_does_not_improve_fails_and_is_never_activated(tmp_path: Path) -> None:
    body = {"hyperparameters": {"epochs": 50, "learning_rate": 10, "momentum": 0.9999}}
    with make_client(tmp_path, api_token=TOKEN) as client:
        served = client.get("/readyz").json()["model_version"]
        job = wait_job(client, client.post("/train", json=body, headers=AUTH).json()["job_id"])
        assert job["status"] == "failed", job
        assert "did not improve" in job["error"], job
        assert job["model_version"] is None
        assert client.get("/readyz").json()["model_version"] == served


# -- pinned versions and the model listing ----------------------------------------------------


def test_a_pinned_version_not_in_memory_is_loaded_off_the_event_loop(tmp_path: Path) -> None:
    with make_client(tmp_path, api_token=TOKEN) as client:
        store = client.app.state.iris.store  # type: ignore[attr-defined]
        model = store.load(store.current()).model
        pinned = store.save(model, {})
        on_loop: list[bool] = []
        load = store.load

        def recording_load(version: str) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return load(version)

        store.load = recording_load
        for _ in range(3):
            answer = client.post("/predict", json={"instances": [ROW], "model_version": pinned})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == pinned
        assert on_loop == [False]  # loaded once, in a pool thread; then served from memory


def test_the_model_list_reads_each_version_once_and_never_its_history(tmp_path: Path) -> None:
    with make_client(tmp_path, api_token=TOKEN) as client:
        store = client.app.state.iris.store  # type: ignore[attr-defined]
        model = store.load(store.current()).model
        history = [{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 2001)]
        for _ in range(3):
            store.save(model, {"history": history, "metrics": {"train_loss": 0.5}})
        reads: list[str] = []
        metadata = store.metadata

        def counting_metadata(version: str) -> Any:
            reads.append(version)
            return metadata(version)

        store.metadata = counting_metadata
        first = client.get("/models").json()
        second = client.get("/models").json()
        assert first == second
        assert len(first["models"]) == 4
        assert sorted(reads) == sorted(m["version"] for m in first["models"])  # once each
        assert {"metrics": {"train_loss": 0.5}}.items() <= first["models"][0].items()


def test_a_v2_infer_pinned_to_a_version_not_in_memory_loads_it_off_the_event_loop(
    tmp_path: Path,
) -> None:
    with make_client(tmp_path, api_token=TOKEN) as client:
        store = client.app.state.iris.store  # type: ignore[attr-defined]
        pinned = store.save(store.load(store.current()).model, {})
        on_loop: list[bool] = []
        load = store.load

        def recording_load(version: str) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return load(version)

        store.load = recording_load
        tensor = {"name": "measurements", "datatype": "FP64", "shape": [1, 4]}
        body = {"inputs": [tensor | {"data": [5.1, 3.5, 1.4, 0.2]}]}
        for _ in range(2):
            answer = client.post(f"/v2/models/iris/versions/{pinned}/infer", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == pinned
        assert on_loop == [False]


def test_a_late_body_is_answered_in_the_error_shape_of_its_path() -> None:
    """The protocol writes the 408 for a late body itself (service/server.py); its bytes come
    from the edge: a problem document, or the protocol's {"error"} under /v2."""
    from service.edge import late_body

    for path, key in (("/predict", "detail"), ("/v2/models/iris/infer", "error")):
        head, _, body = late_body(path, "the body did not arrive").partition(b"\r\n\r\n")
        lines = head.decode().lower().split("\r\n")
        assert lines[0] == "http/1.1 408 request timeout"
        assert "connection: close" in lines
        assert f"content-length: {len(body)}" in lines
        assert json.loads(body)[key] == "the body did not arrive"
