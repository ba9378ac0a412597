"""The HTTP API through the ASGI app (lifespan included): every endpoint, status and limit."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from harness.api import AUTH, ROW, TOKEN, VIRGINICA, assert_error, assert_problem, make_client
from model.data import CLASSES, FEATURES, load_iris
from model.network import Params, forward
from model.persistence import ModelStore
from service.config import Settings
from service.errors import ProblemError
from service.main import create_app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client for tests that do not change state."""
    with make_client(tmp_path_factory.mktemp("shared")) as c:
        yield c


def iris_rows(n: int = 150) -> tuple[list[dict[str, float]], list[int]]:
    data = load_iris()
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in data.raw[:n]]
    return rows, data.y[:n].tolist()


def independent_probabilities(data_dir: Path, version: str, rows: list[dict[str, float]]) -> Any:
    """o_s from the stored arrays, read straight from weights.npz (not through the registry)."""
    with np.load(data_dir / "models" / version / "weights.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    raw = np.array([[r[f] for f in FEATURES] for r in rows])
    X = (raw - arrays["mean"]) / arrays["std"]
    params = Params(W1=arrays["W1"], b1=arrays["b1"], W2=arrays["W2"], b2=arrays["b2"])
    return forward(params, X).o_s


def wait_for_job(client: TestClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/train/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def wait_for_serving(client: TestClient, version: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").json().get("model_version") == version:
            return
        time.sleep(0.02)
    raise AssertionError(f"{version} was not served within {timeout} s")


# -- health, start-up ---------------------------------------------------------------------


def test_healthz_answers_ok(shared: TestClient) -> None:
    assert shared.get("/healthz").json() == {"status": "ok"}


def test_first_start_trains_and_serves_the_default_model(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        version = ready.json()["model_version"]
        store = ModelStore(tmp_path / "models")
        assert store.current() == version
        assert store.load(version).metadata["metrics"]["train_accuracy"] > 0.9


def test_restart_serves_the_stored_model_without_retraining(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        first = client.get("/readyz").json()["model_version"]
    with make_client(tmp_path) as client:
        assert client.get("/readyz").json()["model_version"] == first
    assert len(ModelStore(tmp_path / "models").versions()) == 1


def test_corrupt_current_version_falls_back_to_the_version_active_before(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        good = client.get("/readyz").json()["model_version"]
    store = ModelStore(tmp_path / "models")
    model = store.load(good).model
    bad = store.save(model, {}, activate=True)
    weights = tmp_path / "models" / bad / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with make_client(tmp_path) as client:
        ready = client.get("/readyz").json()
        assert ready["model_version"] == good
        assert bad in ready["problem"]
        assert "sha256" in ready["problem"]
        assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == good
    assert store.current() == bad  # the service reports, it does not rewrite CURRENT


def test_missing_current_serves_the_version_active_before(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        version = client.get("/readyz").json()["model_version"]
    (tmp_path / "models" / "CURRENT").unlink()
    with make_client(tmp_path) as client:
        ready = client.get("/readyz").json()
        assert ready["model_version"] == version
        assert "CURRENT" in ready["problem"]


def test_readyz_is_503_when_no_version_can_be_served(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        version = client.get("/readyz").json()["model_version"]
    (tmp_path / "models" / version / "weights.npz").write_bytes(b"not an npz")
    with make_client(tmp_path) as client:
        assert_problem(client.get("/readyz"), 503, "no version that was active before")
        assert_problem(client.post("/predict", json={"instances": [ROW]}), 503)


def test_a_version_never_activated_is_not_served_when_current_breaks(tmp_path: Path) -> None:
    # A is active; B was stored but never activated (say, it failed its quality gate).
    with make_client(tmp_path) as client:
        a = client.get("/readyz").json()["model_version"]
    store = ModelStore(tmp_path / "models")
    b = store.save(store.load(a).model, {"metrics": {"validation_accuracy": 0.33}})
    weights = tmp_path / "models" / a / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with make_client(tmp_path) as client:
        body = assert_problem(client.get("/readyz"), 503, "no version that was active before")
        assert b not in body["detail"]
        assert_problem(client.post("/predict", json={"instances": [VIRGINICA]}), 503)


# -- predict ------------------------------------------------------------------------------


def test_predict_matches_the_stored_models_mathematics_bit_for_bit(
    shared: TestClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    rows, y = iris_rows()
    response = shared.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    body = response.json()
    data_dir = Path(shared.app.state.iris.settings.data_dir)  # type: ignore[attr-defined]
    expected = independent_probabilities(data_dir, body["model_version"], rows)
    got = np.array([[p["probabilities"][c] for c in CLASSES] for p in body["predictions"]])
    assert np.array_equal(got, expected)
    labels = [p["class_index"] for p in body["predictions"]]
    assert labels == expected.argmax(axis=1).tolist()
    assert [p["label"] for p in body["predictions"]] == [CLASSES[k] for k in labels]
    assert np.mean(np.array(labels) == np.array(y)) > 0.95


def test_predict_one_row_of_each_species(shared: TestClient) -> None:
    body = shared.post("/predict", json={"instances": [ROW, VIRGINICA]}).json()
    assert [p["label"] for p in body["predictions"]] == ["setosa", "virginica"]
    for p in body["predictions"]:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-12)


def test_predict_accepts_integers_as_measurements(shared: TestClient) -> None:
    row = {"sepal_length": 5, "sepal_width": 3, "petal_length": 1, "petal_width": 1}
    assert shared.post("/predict", json={"instances": [row]}).status_code == 200


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "greater than 0"),
        (-1.0, "greater than 0"),
        (100.5, "less than or equal to 100"),
        ("5.1", "valid number"),
        (True, "valid number"),
        (None, "valid number"),
        (1e308 * 10, "finite"),
    ],
)
def test_predict_rejects_a_bad_measurement_naming_the_field(
    shared: TestClient, value: Any, words: str
) -> None:
    body = json.dumps({"instances": [ROW, {**ROW, "petal_width": value}]}, allow_nan=True)
    response = shared.post("/predict", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(response, 422, "instances.1.petal_width", words)
    assert problem["errors"][0]["loc"] == ["instances", 1, "petal_width"]


def test_predict_rejects_nan_and_infinity_literals(shared: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps({"instances": [ROW]}).replace("0.2", literal)
        response = shared.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code in (400, 422), literal
        assert response.headers["content-type"] == "application/problem+json"


def test_predict_rejects_missing_and_extra_fields(shared: TestClient) -> None:
    missing = {k: v for k, v in ROW.items() if k != "sepal_width"}
    assert_problem(shared.post("/predict", json={"instances": [missing]}), 422, "sepal_width")
    extra = {**ROW, "colour": 1.0}
    assert_problem(shared.post("/predict", json={"instances": [extra]}), 422, "colour")
    assert_problem(shared.post("/predict", json={"rows": [ROW]}), 422, "instances")


def test_predict_rejects_empty_and_oversized_batches(shared: TestClient) -> None:
    assert_problem(shared.post("/predict", json={"instances": []}), 422, "instances")
    response = shared.post("/predict", json={"instances": [ROW] * 201})
    assert_problem(response, 422, "201 rows", "limit of 200")


def test_predict_rejects_a_body_that_is_not_json(shared: TestClient) -> None:
    headers = {"content-type": "application/json"}
    assert_problem(shared.post("/predict", content=b"{not json", headers=headers), 400, "JSON")
    assert_problem(shared.post("/predict", content=b"\xff\xfe\x00", headers=headers), 400, "JSON")
    assert_problem(shared.post("/predict", content=b"[1, 2]", headers=headers), 422)


def test_predict_requires_a_json_content_type(shared: TestClient) -> None:
    body = json.dumps({"instances": [ROW]})
    response = shared.post("/predict", content=body, headers={"content-type": "text/plain"})
    assert_problem(response, 415, "application/json", "text/plain")
    assert_problem(shared.post("/predict", content=body), 415, "no Content-Type")


def test_body_over_the_limit_is_413_before_parsing(shared: TestClient) -> None:
    big = json.dumps({"instances": [ROW] * 2000})  # over 64 KiB
    response = shared.post("/predict", content=big, headers={"content-type": "application/json"})
    assert_problem(response, 413, "too large", "IRIS_MAX_BODY_BYTES")


def test_chunked_body_over_the_limit_is_413(shared: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": ['
        for _ in range(3000):
            yield json.dumps(ROW).encode() + b","
        yield b"]}"

    response = shared.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "too large")


def test_predict_with_a_pinned_version(client: TestClient, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    current = store.current()
    other = store.save(store.load(current).model, {}, activate=False)
    body = client.post("/predict", json={"instances": [ROW], "model_version": other}).json()
    assert body["model_version"] == other
    assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == current


def test_predict_unknown_model_returns_404(shared: TestClient) -> None:
    version = "20200101T000000.000000Z-00000000"
    response = shared.post("/predict", json={"instances": [ROW], "model_version": version})
    assert_problem(response, 404, version)


def test_predict_version_that_is_a_path_is_refused(shared: TestClient) -> None:
    response = shared.post("/predict", json={"instances": [ROW], "model_version": "../../etc"})
    assert_problem(response, 422, "model_version")


# -- gradients ----------------------------------------------------------------------------


def reference_gradients(client: TestClient, rows: list[dict[str, float]], y: list[int]) -> Any:
    from model.network import backward, loss

    state = client.app.state.iris  # type: ignore[attr-defined]
    model = state.registry.active.model
    raw = np.array([[r[f] for f in FEATURES] for r in rows])
    cache = forward(model.params, model.standardizer.transform(raw))
    return model, cache, loss, backward, np.array(y)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradients_equal_the_model_backward_pass(shared: TestClient, reduction: str) -> None:
    rows, y = iris_rows()
    rows, y = rows[::10], y[::10]
    body = {
        "instances": rows,
        "labels": y,
        "reduction": reduction,
        "include": ["activations", "intermediates", "input"],
    }
    response = shared.post("/gradients", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    model, cache, loss, backward, labels = reference_gradients(shared, rows, y)
    grads = backward(model.params, cache, labels, reduction)
    assert answer["reduction"] == reduction
    assert np.array_equal(np.array(answer["loss"]), loss(cache, labels, reduction))
    for name, expected in grads.params.arrays().items():
        got = np.array(answer["gradients"][name])
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), name
    n, hidden = len(rows), model.params.hidden_units
    if reduction == "none":
        assert np.array(answer["gradients"]["W1"]).shape == (n, hidden, 4)
    else:
        assert np.array(answer["gradients"]["W2"]).shape == (3, hidden)
    assert np.array_equal(np.array(answer["activations"]["o_s"]), cache.o_s)
    assert np.array_equal(np.array(answer["activations"]["h_a"]), cache.h_a)
    assert np.array_equal(np.array(answer["intermediates"]["dh_a"]), grads.dh_a)
    assert np.array_equal(np.array(answer["input_gradients"]["x"]), grads.dx)
    measured = np.array(answer["input_gradients"]["measurements"])
    assert np.array_equal(measured, grads.dx / model.standardizer.std)


def test_gradients_by_label_name_equal_gradients_by_index(shared: TestClient) -> None:
    by_index = shared.post("/gradients", json={"instances": [ROW, VIRGINICA], "labels": [0, 2]})
    by_name = shared.post(
        "/gradients", json={"instances": [ROW, VIRGINICA], "labels": ["setosa", "virginica"]}
    )
    assert by_index.status_code == 200
    assert by_index.json() == by_name.json()
    assert "activations" not in by_index.json()


def test_gradients_input_gradient_matches_finite_differences_in_centimetres(
    shared: TestClient,
) -> None:
    body = {"instances": [VIRGINICA], "labels": [1], "reduction": "sum", "include": ["input"]}
    analytic = np.array(
        shared.post("/gradients", json=body).json()["input_gradients"]["measurements"]
    )
    h = 1e-6
    for j, feature in enumerate(FEATURES):
        losses = []
        for sign in (1, -1):
            row = {**VIRGINICA, feature: VIRGINICA[feature] + sign * h}
            losses.append(
                shared.post("/gradients", json={**body, "instances": [row]}).json()["loss"]
            )
        numeric = (losses[0] - losses[1]) / (2 * h)
        assert analytic[0][j] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [ROW, ROW], "labels": [0]}, "1 labels for 2 instances"),
        ({"instances": [ROW], "labels": ["rose"]}, "labels.0"),
        ({"instances": [ROW], "labels": [3]}, "labels.0"),
        ({"instances": [ROW], "labels": [True]}, "labels.0"),
        ({"instances": [ROW], "labels": [0], "reduction": "max"}, "reduction"),
        ({"instances": [ROW], "labels": [0], "include": ["weights"]}, "include.0"),
        ({"instances": [ROW]}, "labels"),
    ],
)
def test_gradients_reject_bad_requests(shared: TestClient, body: Any, words: str) -> None:
    assert_problem(shared.post("/gradients", json=body), 422, words)


# -- training -----------------------------------------------------------------------------


def test_auth_answers_204_for_the_token_and_401_for_any_other(shared: TestClient) -> None:
    assert shared.get("/auth", headers=AUTH).status_code == 204
    assert_problem(shared.get("/auth"), 401, "token")
    assert_problem(shared.get("/auth", headers={"Authorization": "Bearer wrong"}), 401, "token")


def test_train_requires_the_token(shared: TestClient) -> None:
    response = shared.post("/train", json={})
    assert_problem(response, 401, "bearer token")
    assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = shared.post("/train", json={}, headers={"Authorization": "Bearer nope"})
    assert_problem(wrong, 401, "invalid")
    basic = shared.post("/train", json={}, headers={"Authorization": f"Basic {TOKEN}"})
    assert_problem(basic, 401)


def test_train_runs_a_job_and_the_new_version_is_served(client: TestClient) -> None:
    before = client.get("/readyz").json()["model_version"]
    response = client.post(
        "/train", json={"hyperparameters": {"epochs": 30, "seed": 7}}, headers=AUTH
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/train/{job['job_id']}"
    assert job["status"] in ("queued", "running")
    assert job["hyperparameters"]["epochs"] == 30
    done = wait_for_job(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["epoch"] == 30
    assert done["activated"] is True
    assert done["metrics"]["train_accuracy"] > 0.5
    assert done["model_version"] != before
    wait_for_serving(client, done["model_version"])
    listed = client.get("/train").json()["jobs"]
    assert listed[0]["job_id"] == job["job_id"]


def test_train_on_samples_from_the_request(client: TestClient) -> None:
    rows, y = iris_rows()
    samples = [{**r, "species": CLASSES[k]} for r, k in zip(rows, y, strict=True)][::3]
    response = client.post(
        "/train",
        json={
            "dataset": {"samples": samples},
            "hyperparameters": {"epochs": 20},
            "activate": False,
        },
        headers=AUTH,
    )
    assert response.status_code == 202, response.text
    done = wait_for_job(client, response.json()["job_id"])
    assert done["status"] == "succeeded"
    assert done["dataset"] == {"source": "request", "rows": 50}
    assert done["activated"] is False
    assert ModelStore(client.app.state.iris.settings.models_dir).current() != done["model_version"]  # type: ignore[attr-defined]


def test_second_training_job_gets_409_naming_the_running_one(client: TestClient) -> None:
    first = client.post("/train", json={"hyperparameters": {"epochs": 10_000}}, headers=AUTH).json()
    second = client.post("/train", json={}, headers=AUTH)
    problem = assert_problem(second, 409, first["job_id"])
    assert problem["job_id"] == first["job_id"]
    cancelled = client.post(f"/train/{first['job_id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 202
    assert wait_for_job(client, first["job_id"])["status"] == "cancelled"


def test_cancel_needs_the_token_and_a_finished_job_cannot_be_cancelled(client: TestClient) -> None:
    job = client.post("/train", json={"hyperparameters": {"epochs": 5}}, headers=AUTH).json()
    assert_problem(client.post(f"/train/{job['job_id']}/cancel"), 401)
    wait_for_job(client, job["job_id"])
    assert_problem(client.post(f"/train/{job['job_id']}/cancel", headers=AUTH), 409, "already")


def test_delete_removes_an_ended_job_and_refuses_a_running_one(client: TestClient) -> None:
    job_id = client.post(
        "/train", json={"hyperparameters": {"epochs": 10_000}}, headers=AUTH
    ).json()["job_id"]
    assert_problem(client.delete(f"/train/{job_id}"), 401)
    assert_problem(client.delete(f"/train/{job_id}", headers=AUTH), 409, "cancel it first")
    assert client.get(f"/train/{job_id}").status_code == 200  # still there
    client.post(f"/train/{job_id}/cancel", headers=AUTH)
    assert wait_for_job(client, job_id)["status"] == "cancelled"
    deleted = client.delete(f"/train/{job_id}", headers=AUTH)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(client.get(f"/train/{job_id}"), 404, "no training job")
    assert job_id not in [j["job_id"] for j in client.get("/train").json()["jobs"]]
    assert_problem(client.delete(f"/train/{job_id}", headers=AUTH), 404)


def test_limits_are_the_settings_in_force(client: TestClient) -> None:
    settings = client.app.state.iris.settings  # type: ignore[attr-defined]
    assert client.get("/limits").json() == {
        "max_instances": settings.max_instances,
        "max_body_bytes": settings.max_body_bytes,
        "max_train_rows": settings.max_train_rows,
    }


def test_quality_gate_stores_but_does_not_activate(client: TestClient) -> None:
    before = client.get("/readyz").json()["model_version"]
    body = {
        "hyperparameters": {"epochs": 1, "learning_rate": 1e-6, "validation_fraction": 0.2},
        "min_validation_accuracy": 0.99,
    }
    done = wait_for_job(client, client.post("/train", json=body, headers=AUTH).json()["job_id"])
    assert done["status"] == "succeeded"
    assert done["activated"] is False
    assert "min_validation_accuracy" in done["metrics"]["quality_gate"]
    assert done["metrics"]["validation_accuracy"] < 0.99
    # Activation is CURRENT moving, and the job moves it (or not) before it reports success:
    # the version is stored, CURRENT still names the old one, so no worker can switch to it.
    store = ModelStore(client.app.state.iris.settings.models_dir)  # type: ignore[attr-defined]
    assert done["model_version"] in store.versions()
    assert store.current() == before
    assert client.get("/readyz").json()["model_version"] == before


def test_diverging_training_fails_and_keeps_the_served_model(client: TestClient) -> None:
    before = client.get("/readyz").json()["model_version"]
    versions = ModelStore(client.app.state.iris.settings.models_dir).versions()  # type: ignore[attr-defined]
    body = {
        "hyperparameters": {
            # every step multiplies W1 and W2 by 1 - 10 * 1 = -9: certain to overflow
            "learning_rate": 10,
            "weight_decay": 1,
            "epochs": 50,
        },
    }
    done = wait_for_job(client, client.post("/train", json=body, headers=AUTH).json()["job_id"])
    assert done["status"] == "failed", done
    assert "diverged" in done["error"]
    assert client.get("/readyz").json()["model_version"] == before
    assert ModelStore(client.app.state.iris.settings.models_dir).versions() == versions  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"hidden_units": 0}, "hidden_units"),
        ({"hidden_units": 1025}, "hidden_units"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 10_001}, "epochs"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": 10.5}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 10_001}, "batch_size"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"weight_decay": -1e-9}, "weight_decay"),
        ({"validation_fraction": 0.51}, "validation_fraction"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": "10"}, "epochs"),
        ({"seed": -1}, "seed"),
        ({"early_stopping": True}, "validation_fraction"),
        ({"depth": 3}, "depth"),
    ],
)
def test_train_rejects_hyperparameters_out_of_bounds(
    shared: TestClient, hyperparameters: dict[str, Any], field: str
) -> None:
    response = shared.post("/train", json={"hyperparameters": hyperparameters}, headers=AUTH)
    assert_problem(response, 422, field)


@pytest.mark.parametrize(
    ("hyperparameters"),
    [
        {
            "hidden_units": 1024,
            "epochs": 1,
            "learning_rate": 10,
            "batch_size": 10_000,
            "momentum": 0.999,
            "validation_fraction": 0.5,
            "early_stopping": True,
        },
        {"hidden_units": 1, "epochs": 1, "learning_rate": 1e-9, "batch_size": 1, "momentum": 0},
    ],
)
def test_train_accepts_hyperparameters_at_the_bounds(
    client: TestClient, hyperparameters: dict[str, Any]
) -> None:
    response = client.post("/train", json={"hyperparameters": hyperparameters}, headers=AUTH)
    assert response.status_code == 202, response.text
    assert wait_for_job(client, response.json()["job_id"])["status"] in ("succeeded", "failed")


def test_train_rejects_bad_datasets_naming_the_problem(shared: TestClient) -> None:
    rows, y = iris_rows()
    samples = [{**r, "species": CLASSES[k]} for r, k in zip(rows, y, strict=True)]
    few_setosa = samples[:3] + samples[50:]
    response = shared.post("/train", json={"dataset": {"samples": few_setosa}}, headers=AUTH)
    assert_problem(response, 422, "setosa (3)")
    unknown = [*samples[:20], {**samples[0], "species": "rose"}]
    assert_problem(
        shared.post("/train", json={"dataset": {"samples": unknown}}, headers=AUTH), 422, "species"
    )
    too_many = samples * 4  # 600 rows, over the limit of 500
    assert_problem(
        shared.post("/train", json={"dataset": {"samples": too_many}}, headers=AUTH),
        422,
        "600 rows",
        "IRIS_MAX_TRAIN_ROWS",
    )
    gate = {"min_validation_accuracy": 0.9}
    assert_problem(shared.post("/train", json=gate, headers=AUTH), 422, "validation_fraction")


def test_job_ids_that_are_not_well_formed_are_404(shared: TestClient) -> None:
    assert_problem(shared.get("/train/..%2F..%2Fjobs.sqlite3"), 404)
    assert_problem(shared.get("/train/not-a-job"), 404, "32 hex digits")
    assert_problem(shared.get("/train/" + "0" * 32), 404, "no training job")
    assert_problem(shared.delete("/train/" + "0" * 32, headers=AUTH), 404)
    assert_problem(shared.post("/train/" + "0" * 32 + "/cancel", headers=AUTH), 404)


# -- models -------------------------------------------------------------------------------


def test_models_lists_versions_and_metadata(client: TestClient) -> None:
    listing = client.get("/models").json()
    assert listing["current"] == listing["serving"]
    [entry] = listing["models"]
    assert entry["version"] == listing["current"]
    assert entry["active"] is True
    detail = client.get(f"/models/{entry['version']}").json()
    assert detail["classes"] == list(CLASSES)
    assert detail["features"] == list(FEATURES)
    assert "history" not in detail  # GET /models/{version}/history serves it
    assert detail["active"] is True
    history = client.get(f"/models/{entry['version']}/history").json()
    assert history["model_version"] == entry["version"]
    assert len(history["history"]) == detail["hyperparameters"]["epochs"]


def test_activate_rolls_back_and_forward(client: TestClient, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    old = store.current()
    new = store.save(store.load(old).model, {}, activate=False)
    assert_problem(client.post(f"/models/{new}/activate"), 401)
    response = client.post(f"/models/{new}/activate", headers=AUTH)
    assert response.status_code == 200
    assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == new
    client.post(f"/models/{old}/activate", headers=AUTH)
    assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == old
    assert [m["version"] for m in client.get("/models").json()["models"]] == [new, old]


def test_activate_refuses_a_corrupt_version_and_keeps_current(
    client: TestClient, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    current = store.current()
    bad = store.save(store.load(current).model, {}, activate=False)
    (tmp_path / "models" / bad / "weights.npz").write_bytes(b"garbage")
    assert_problem(client.post(f"/models/{bad}/activate", headers=AUTH), 409, "sha256")
    assert store.current() == current
    entry = next(m for m in client.get("/models").json()["models"] if m["version"] == bad)
    assert entry["active"] is False


def test_unknown_and_malformed_versions_are_404(shared: TestClient) -> None:
    assert_problem(shared.get("/models/20200101T000000.000000Z-00000000"), 404)
    assert_problem(shared.get("/models/..%2F..%2Fapi_token"), 404)
    assert_problem(shared.get("/models/..%2e"), 404, "not a version id")
    assert_problem(shared.get("/models/CURRENT"), 404)
    assert_problem(shared.post("/models/nope/activate", headers=AUTH), 404)


def test_unknown_and_malformed_versions_have_no_history(shared: TestClient) -> None:
    assert_problem(shared.get("/models/20200101T000000.000000Z-00000000/history"), 404)
    assert_problem(shared.get("/models/..%2e/history"), 404, "not a version id")
    assert_problem(shared.get("/models/CURRENT/history"), 404)


LONG_HISTORY = [
    {"epoch": e, "epochs": 2000, "train_loss": 1.0 / e, "validation_loss": None}
    for e in range(1, 2001)
]


def test_model_detail_is_a_cached_summary_and_the_history_is_asked_for(
    client: TestClient,
) -> None:
    store = client.app.state.iris.store  # type: ignore[attr-defined]
    version = store.save(store.load(store.current()).model, {"history": LONG_HISTORY})
    reads: list[str] = []
    metadata = store.metadata

    def counting_metadata(v: str) -> Any:
        reads.append(v)
        return metadata(v)

    store.metadata = counting_metadata
    details = [client.get(f"/models/{version}") for _ in range(3)]
    assert {d.status_code for d in details} == {200}
    assert reads == [version]  # read once, then served from the summary
    assert "history" not in details[0].json()
    assert details[0].json()["version"] == version
    assert details[0].json()["active"] is False
    assert details[0].content == details[2].content
    history = client.get(f"/models/{version}/history")
    assert history.status_code == 200, history.text
    assert history.json() == {"model_version": version, "history": LONG_HISTORY}
    assert reads == [version, version]  # the full history is read when asked for


def test_model_detail_follows_a_version_changed_or_removed_by_hand(
    client: TestClient, tmp_path: Path
) -> None:
    store = client.app.state.iris.store  # type: ignore[attr-defined]
    version = store.save(store.load(store.current()).model, {"metrics": {"train_loss": 0.5}})
    assert client.get(f"/models/{version}").json()["metrics"] == {"train_loss": 0.5}
    meta_path = tmp_path / "models" / version / "model.json"
    changed = json.loads(meta_path.read_text()) | {"metrics": {"train_loss": 0.25}}
    meta_path.unlink()  # a restore from a backup: a new file, a new inode
    meta_path.write_text(json.dumps(changed))
    assert client.get(f"/models/{version}").json()["metrics"] == {"train_loss": 0.25}
    meta_path.write_text("{not json")
    assert_problem(client.get(f"/models/{version}"), 409)
    assert_problem(client.get(f"/models/{version}/history"), 409)
    for entry in meta_path.parent.iterdir():
        entry.unlink()
    meta_path.parent.rmdir()
    assert_problem(client.get(f"/models/{version}"), 404)
    assert_problem(client.get(f"/models/{version}/history"), 404)


def test_a_version_without_history_has_an_empty_one(client: TestClient) -> None:
    store = client.app.state.iris.store  # type: ignore[attr-defined]
    version = store.save(store.load(store.current()).model, {})
    assert client.get(f"/models/{version}/history").json() == {
        "model_version": version,
        "history": [],
    }


# -- deleting versions; what a version records of how it was made -------------------------


def test_delete_removes_a_version_and_a_request_pinned_to_it_gets_404(
    client: TestClient, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    current = store.current()
    doomed = store.save(store.load(current).model, {}, activate=False)
    pinned = {"instances": [ROW], "model_version": doomed}
    assert client.post("/predict", json=pinned).json()["model_version"] == doomed  # now cached
    assert client.get(f"/models/{doomed}").status_code == 200
    deleted = client.delete(f"/models/{doomed}", headers=AUTH)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert not (tmp_path / "models" / doomed).exists()
    assert not [p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(".tmp-")]
    assert store.versions() == [current]
    assert_problem(client.post("/predict", json=pinned), 404, doomed)  # at once, not cached
    gradients = {"instances": [ROW], "labels": ["setosa"], "model_version": doomed}
    assert_problem(client.post("/gradients", json=gradients), 404, doomed)
    assert_problem(client.get(f"/models/{doomed}"), 404, "no stored model version")
    assert_problem(client.get(f"/models/{doomed}/history"), 404)
    assert_problem(client.post(f"/models/{doomed}/activate", headers=AUTH), 404)
    assert doomed not in [m["version"] for m in client.get("/models").json()["models"]]
    assert_problem(client.delete(f"/models/{doomed}", headers=AUTH), 404, doomed)
    assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == current


def test_delete_refuses_the_served_version_with_409(client: TestClient, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    current = store.current()
    problem = assert_problem(
        client.delete(f"/models/{current}", headers=AUTH), 409, current, "current version"
    )
    assert problem["title"] == "Conflict"
    assert (tmp_path / "models" / current / "weights.npz").is_file()
    assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == current
    other = store.save(store.load(current).model, {})
    assert client.post(f"/models/{other}/activate", headers=AUTH).status_code == 200
    assert client.delete(f"/models/{current}", headers=AUTH).status_code == 204  # not served now
    assert_problem(client.delete(f"/models/{other}", headers=AUTH), 409, other)


def test_delete_needs_the_token(client: TestClient, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    version = store.save(store.load(store.current()).model, {})
    missing = client.delete(f"/models/{version}")
    assert_problem(missing, 401, "missing bearer token")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.delete(f"/models/{version}", headers={"Authorization": "Bearer wrong"})
    assert_problem(wrong, 401, "invalid bearer token")
    assert version in store.versions()


def test_delete_of_unknown_and_malformed_versions_is_404(shared: TestClient) -> None:
    unknown = "20200101T000000.000000Z-00000000"
    assert_problem(shared.delete(f"/models/{unknown}", headers=AUTH), 404, unknown)
    assert_problem(shared.delete("/models/..%2FCURRENT", headers=AUTH), 404)
    assert_problem(shared.delete("/models/..%2e", headers=AUTH), 404, "not a version id")
    assert_problem(shared.delete("/models/CURRENT", headers=AUTH), 404, "not a version id")


def test_a_version_deleted_by_another_worker_leaves_the_pinned_cache_within_the_poll(
    tmp_path: Path,
) -> None:
    with make_client(tmp_path) as a, make_client(tmp_path) as b:  # two workers, one data dir
        store = ModelStore(tmp_path / "models")
        doomed = store.save(store.load(store.current()).model, {})
        pinned = {"instances": [ROW], "model_version": doomed}
        assert b.post("/predict", json=pinned).status_code == 200  # b keeps it loaded
        assert a.delete(f"/models/{doomed}", headers=AUTH).status_code == 204
        deadline = time.monotonic() + 2.0  # the poll is 0.05 s here
        while b.post("/predict", json=pinned).status_code == 200:
            assert time.monotonic() < deadline, "b still serves the deleted version"
            time.sleep(0.01)
        assert_problem(b.post("/predict", json=pinned), 404, doomed)


def independent_sha256(features: list[list[float]], species: list[str]) -> str:
    """sha256 of float64 features (n, 4), then int64 class indices, both little-endian."""
    raw = np.array(features, dtype="<f8")
    y = np.array([["setosa", "versicolor", "virginica"].index(s) for s in species], dtype="<i8")
    return hashlib.sha256(raw.tobytes() + y.tobytes()).hexdigest()


def test_the_default_version_records_the_sha256_of_the_shipped_rows(client: TestClient) -> None:
    text = (Path(__file__).resolve().parents[1] / "model" / "data" / "iris.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = independent_sha256(
        [[float(row[f]) for f in FEATURES] for row in rows], [row["species"] for row in rows]
    )
    [entry] = client.get("/models").json()["models"]
    assert entry["data_sha256"] == expected
    assert entry["job_id"] is None  # trained at first start, by no job
    assert entry["note"] is None
    detail = client.get(f"/models/{entry['version']}").json()
    assert (detail["data_sha256"], detail["job_id"], detail["note"]) == (expected, None, None)


def test_a_trained_version_records_its_job_note_and_data(client: TestClient) -> None:
    rows, y = iris_rows()
    samples = [{**r, "species": CLASSES[k]} for r, k in zip(rows, y, strict=True)][1::4]
    note = "April data, every fourth flower — ünïcode is fine"
    response = client.post(
        "/train",
        json={"dataset": {"samples": samples}, "hyperparameters": {"epochs": 20}, "note": note},
        headers=AUTH,
    )
    assert response.status_code == 202, response.text
    assert response.json()["note"] == note
    job = wait_for_job(client, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["note"] == note
    assert client.get("/train").json()["jobs"][0]["note"] == note
    version = job["model_version"]
    expected = independent_sha256(
        [[s[f] for f in FEATURES] for s in samples], [s["species"] for s in samples]
    )
    entry = next(m for m in client.get("/models").json()["models"] if m["version"] == version)
    detail = client.get(f"/models/{version}").json()
    for shown in (entry, detail):
        assert shown["job_id"] == job["job_id"]
        assert shown["note"] == note
        assert shown["data_sha256"] == expected
    assert client.get(f"/train/{detail['job_id']}").json()["model_version"] == version
    plain = client.post("/train", json={"hyperparameters": {"epochs": 5}}, headers=AUTH).json()
    assert plain["note"] is None
    made = wait_for_job(client, plain["job_id"])["model_version"]
    assert client.get(f"/models/{made}").json()["note"] is None


def test_a_version_made_before_provenance_was_kept_shows_nulls(
    client: TestClient, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    old = store.save(store.load(store.current()).model, {"metrics": {"train_loss": 0.5}})
    entry = next(m for m in client.get("/models").json()["models"] if m["version"] == old)
    detail = client.get(f"/models/{old}").json()
    for shown in (entry, detail):
        assert (shown["job_id"], shown["note"], shown["data_sha256"]) == (None, None, None)


@pytest.mark.parametrize(
    ("note", "words"),
    [
        ("x" * 201, "at most 200 characters"),
        ("first line\nsecond line", "control character '\\n'"),
        ("tab\tseparated", "control character '\\t'"),
        ("\x1b[31mred", "control character '\\x1b'"),
        (42, "valid string"),
    ],
)
def test_train_refuses_a_note_too_long_or_with_control_characters(
    shared: TestClient, note: Any, words: str
) -> None:
    response = shared.post("/train", json={"note": note}, headers=AUTH)
    problem = assert_problem(response, 422, "note", words)
    assert problem["errors"][0]["loc"] == ["note"]


# -- errors, metrics, docs ----------------------------------------------------------------


def test_unknown_path_and_wrong_method_are_problems(shared: TestClient) -> None:
    assert_problem(shared.get("/nothing-here"), 404, "/nothing-here")
    assert_problem(shared.get("/predict"), 405, "GET")
    assert_problem(shared.put("/models"), 405)


def test_metrics_count_requests_predictions_and_the_active_model(shared: TestClient) -> None:
    shared.post("/predict", json={"instances": [ROW, ROW, VIRGINICA]})
    text = shared.get("/metrics").text
    version = shared.get("/readyz").json()["model_version"]
    assert 'iris_http_requests_total{method="POST",route="/predict",status="200"}' in text
    assert (
        'iris_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/predict"}'
        in text
    )
    assert 'iris_predictions_total{label="virginica"}' in text
    assert f'iris_active_model_info{{version="{version}"}} 1.0' in text


def request_series(client: TestClient) -> set[str]:
    """The label sets of iris_http_requests_total in /metrics (the latency histogram's are
    the same without the status)."""
    lines = client.get("/metrics").text.splitlines()
    return {line.split(" ")[0] for line in lines if line.startswith("iris_http_requests_total{")}


def test_random_methods_and_paths_add_at_most_a_few_metric_series(shared: TestClient) -> None:
    rng = random.Random(5)
    request_series(shared)  # GET /metrics has its own series from here on
    before = request_series(shared)
    prefixes = ["", "/models", "/v2/models", "/v2/models/iris/versions", "/train", "/predict"]
    for _ in range(500):
        method = "".join(rng.choices(string.ascii_letters, k=rng.randint(3, 10)))
        path = f"{rng.choice(prefixes)}/{rng.randbytes(6).hex()}"
        response = shared.request(method, path)
        assert response.status_code in (404, 405), (method, path, response.text)
    added = request_series(shared) - before
    # Routes (the few templates the prefixes reach, or "unmatched") x "other" x (404, 405):
    # a handful of series, however many methods and paths clients invent.
    assert len(added) <= 16, sorted(added)
    assert all('method="other"' in series for series in added), sorted(added)


def test_a_trailing_slash_is_not_redirected_to_the_host_header(shared: TestClient) -> None:
    for path in ("/models/", "/predict/", "/healthz/", "/v2/models/iris/", "/v2/"):
        response = shared.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert "evil.example" not in response.headers.get("location", ""), path
        assert "evil.example" not in response.text
        # one spelling of each path: a 404 naming it, in the protocol's own error format
        check = assert_error if path.startswith("/v2/") else assert_problem
        check(response, 404, path)
    assert_problem(shared.post("/predict/", json={"instances": [ROW]}), 404, "/predict/")


def test_docs_page_uses_no_cdn(shared: TestClient) -> None:
    html = shared.get("/docs").text
    assert "cdn." not in html
    script = next(part.split('"')[0] for part in html.split('src="')[1:])
    assert shared.get(script).status_code == 200


def test_openapi_describes_every_endpoint_with_its_errors(shared: TestClient) -> None:
    spec = shared.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/predict",
        "/gradients",
        "/train",
        "/train/{job_id}",
        "/models",
        "/models/{version}",
        "/models/{version}/history",
        "/models/{version}/activate",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    predict = paths["/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictRequest"
    )
    assert {"400", "413", "415", "422"} <= set(predict["responses"])
    assert "401" in paths["/train"]["post"]["responses"]
    delete_model = paths["/models/{version}"]["delete"]
    assert {"204", "401", "404", "409"} <= set(delete_model["responses"])
    assert delete_model["security"] == [{"bearer": []}]
    note = spec["components"]["schemas"]["TrainRequest"]["properties"]["note"]["anyOf"][0]
    assert note["maxLength"] == 200
    schemas = spec["components"]["schemas"]
    for name in ("PredictRequest", "Instance", "GradientsRequest", "TrainRequest", "Problem"):
        assert name in schemas
    # Every reference resolves: a body a route reads itself is in the document too.
    refs = set(re.findall(r'"\$ref": ?"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs - set(schemas) == set()
    for path in ("/routing", "/routing/history", "/feedback", "/monitoring"):
        assert path in paths, path
    assert paths["/routing"]["put"]["security"] == [{"bearer": []}]
    assert paths["/feedback"]["post"]["security"] == [{"bearer": []}]


def test_token_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, model_poll_seconds=0.05)
    with TestClient(create_app(settings)) as c:
        token = (tmp_path / "api_token").read_text().strip()
        assert (tmp_path / "api_token").stat().st_mode & 0o777 == 0o600
        assert len(token) >= 32
        assert c.post("/train", json={"hyperparameters": {"epochs": 1}}).status_code == 401
        ok = c.post(
            "/train",
            json={"hyperparameters": {"epochs": 1}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ok.status_code == 202
        wait_for_job(c, ok.json()["job_id"])
    with TestClient(create_app(settings)):
        assert (tmp_path / "api_token").read_text().strip() == token


def test_problem_bodies_are_json_even_for_unexpected_errors(shared: TestClient) -> None:
    response = shared.post(
        "/predict", content=io.BytesIO(b"{}").read(), headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "instances")


def test_compressed_bodies_are_refused_with_415(shared: TestClient) -> None:
    import gzip

    body = gzip.compress(json.dumps({"instances": [ROW]}).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    assert_problem(shared.post("/predict", content=body, headers=headers), 415, "gzip")


@pytest.mark.parametrize("parts", [1, 2, 3], ids=["one member", "two members", "garbage"])
def test_predict_refuses_every_gzip_body_without_reading_any_part(
    shared: TestClient, parts: int
) -> None:
    import gzip

    raw = json.dumps({"instances": [ROW]}).encode()
    body = {
        1: gzip.compress(raw),
        2: gzip.compress(raw[:20]) + gzip.compress(raw[20:]),
        3: gzip.compress(raw) + b"\0junk",
    }[parts]
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    # /predict takes plain JSON only: no member of a compressed body is ever read.
    assert_problem(shared.post("/predict", content=body, headers=headers), 415, "'gzip'")


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [{"sepal_length": 5.1, "sepal_length": 5.2, "sepal_width": 3.5,'
        b' "petal_length": 1.4, "petal_width": 0.2}]}',
        b'{"instances": [], "instances": [{"sepal_length": 5.1, "sepal_width": 3.5,'
        b' "petal_length": 1.4, "petal_width": 0.2}]}',
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(shared: TestClient, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    assert_problem(shared.post("/predict", content=body, headers=headers), 400, "duplicate key")
    gradients = body.replace(b'{"instances"', b'{"labels": [0], "instances"')
    assert_problem(shared.post("/gradients", content=gradients, headers=headers), 400, "duplicate")


def test_predict_accepts_escaped_keys_through_the_validating_path(shared: TestClient) -> None:
    body = json.dumps({"instances": [ROW]}).replace("sepal_length", "sepal\\u005flength")
    response = shared.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    fast = shared.post("/predict", json={"instances": [ROW]}).json()
    assert response.json() == fast


def test_predict_decoder_agrees_with_the_schema_on_every_rule() -> None:
    """The struct reads only what the schema accepts, with the same values; what it does
    not read, the schema reads or names."""
    from service.native import predict_input, struct_reading
    from service.schemas import PredictRequest

    good = {"instances": [ROW, VIRGINICA], "model_version": "20261128T004614.062920Z-7483c053"}
    cases: list[Any] = [
        good,
        {"instances": [ROW]},
        {"instances": [{**ROW, "sepal_width": 3}]},
        {"instances": [{**ROW, "sepal_width": True}]},
        {"instances": [{**ROW, "sepal_width": "3.5"}]},
        {"instances": [{**ROW, "sepal_width": None}]},
        {"instances": [{**ROW, "sepal_width": 0}]},
        {"instances": [{**ROW, "sepal_width": 100}]},
        {"instances": [{**ROW, "sepal_width": 100.0000001}]},
        {"instances": [{**ROW, "extra": 1.0}]},
        {"instances": [[5.1, 3.5, 1.4, 0.2]]},
        {"instances": ["abcd"]},
        {"instances": []},
        {"instances": [ROW], "model_version": "../x"},
        {"instances": [ROW], "model_version": None},
        {"instances": [ROW], "other": 1},
        [ROW],
    ]
    assert struct_reading(json.dumps(good).encode()) is not None  # the common body: typed
    for case in cases:
        body = json.dumps(case).encode()
        typed = struct_reading(body)
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValueError:
            assert typed is None, case
            with pytest.raises((ValidationError, ProblemError)):
                predict_input(body, 100)
            continue
        expected = [[getattr(i, f) for f in FEATURES] for i in parsed.instances]
        raw, version = predict_input(body, 100)
        assert (np.asarray(raw, dtype=np.float64).tolist(), version) == (
            expected,
            parsed.model_version,
        )
        if typed is not None:
            assert np.asarray(typed[0], dtype=np.float64).tolist() == expected


def test_the_struct_counts_every_quote_of_a_predict_body() -> None:
    """A string value, a fifth key or a key written twice changes the count of quotes, so
    the struct's reading is never taken for a body it does not read whole."""
    from service.native import struct_reading

    rows = [ROW] * 9
    assert struct_reading(json.dumps({"instances": rows}).encode()) is not None
    extra = json.dumps({"instances": [*rows, {**ROW, "extra": 1.0}]}).encode()
    assert struct_reading(extra) is None  # refused by the struct: an unknown field
    twice = extra.replace(b'"extra"', b'"sepal_width"')  # a key written twice
    assert struct_reading(twice) is None


def test_prediction_json_equals_the_plain_serialisation() -> None:
    import orjson

    from service.routers.predict import prediction_json, predictions_json

    rng = np.random.default_rng(5)
    o_s = rng.dirichlet([0.2, 0.2, 0.2], size=500)
    o_s[0] = [1.0, 0.0, 0.0]
    o_s[1] = [1e-300, 5e-324, 1.0 - 1e-16]
    expected = {
        "model_version": "v1",
        "predictions": [
            {
                "label": CLASSES[k],
                "class_index": k,
                "probabilities": dict(zip(CLASSES, row, strict=True)),
            }
            for k, row in zip(o_s.argmax(axis=1).tolist(), o_s.tolist(), strict=True)
        ],
    }
    text = predictions_json("v1", o_s, o_s.argmax(axis=1))
    assert orjson.loads(text) == expected
    assert json.loads(text) == expected
    empty = predictions_json("v1", o_s[:0], o_s[:0].argmax(axis=1))
    assert orjson.loads(empty) == {"model_version": "v1", "predictions": []}
    indices = o_s.argmax(axis=1).tolist()
    for i, (k, row) in enumerate(zip(indices, o_s, strict=True)):  # the one-row writer
        one = prediction_json("v1", row.tolist(), k)
        assert one == predictions_json("v1", row[None, :], np.array([k]))
        assert orjson.loads(one)["predictions"] == [expected["predictions"][i]]


def test_a_damaged_jobs_database_leaves_predictions_serving_and_training_503(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
    with make_client(tmp_path) as client:
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
        assert_problem(client.post("/train", json={}, headers=AUTH), 503, "jobs database")
