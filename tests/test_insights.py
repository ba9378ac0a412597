"""The read-only views: job events (SSE), the shipped data, parameters, evaluation, regions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from harness.api import AUTH, TOKEN, assert_problem, make_client, start_job
from harness.servers import server_pool, wait_for
from model.data import CLASSES, FEATURES
from model.network import Params, forward

IRIS_CSV = Path(__file__).resolve().parents[1] / "model" / "data" / "iris.csv"
# 30,000 steps of 8 rows, 2.5-25 s of training on the machines seen: enough heartbeats
# (every 0.25 s) for several live points.
LONG_JOB = {
    "hyperparameters": {
        "hidden_units": 256,
        "epochs": 2000,
        "batch_size": 8,
        "validation_fraction": 0.2,
    }
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path, str]]:
    """A client, its data directory and the served version (tests here do not change state)."""
    data_dir = tmp_path_factory.mktemp("insights")
    with make_client(data_dir) as client:
        yield client, data_dir, client.get("/models").json()["current"]


def shipped_csv() -> tuple[np.ndarray[Any, Any], list[str]]:
    """The Iris rows read straight from the CSV file, without model/data.py."""
    lines = IRIS_CSV.read_text().strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    raw = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    return raw, [r["species"] for r in rows]


def stored_arrays(data_dir: Path, version: str) -> dict[str, Any]:
    with np.load(data_dir / "models" / version / "weights.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def probabilities(arrays: dict[str, Any], raw: np.ndarray[Any, Any]) -> Any:
    """o_s from the stored arrays for raw centimetres."""
    params = Params(W1=arrays["W1"], b1=arrays["b1"], W2=arrays["W2"], b2=arrays["b2"])
    return forward(params, (raw - arrays["mean"]) / arrays["std"]).o_s


def parse_events(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a Server-Sent Events stream; comments and retry lines skipped."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


# -- the shipped data ----------------------------------------------------------------------------


def test_dataset_lists_every_shipped_flower_with_its_species(
    served: tuple[TestClient, Path, str],
) -> None:
    client, _, _ = served
    response = client.get("/datasets/iris")
    assert response.status_code == 200
    body = response.json()
    raw, species = shipped_csv()
    assert body["features"] == list(FEATURES)
    assert body["classes"] == list(CLASSES)
    assert len(body["samples"]) == 150
    assert [[s[f] for f in FEATURES] for s in body["samples"]] == raw.tolist()
    assert [s["species"] for s in body["samples"]] == species
    for k, feature in enumerate(FEATURES):
        summary = body["summary"][feature]
        assert summary["min"] == raw[:, k].min()
        assert summary["max"] == raw[:, k].max()
        assert summary["mean"] == pytest.approx(raw[:, k].mean(), rel=1e-12)


# -- parameters and evaluation -------------------------------------------------------------------


def test_parameters_are_the_stored_weights(served: tuple[TestClient, Path, str]) -> None:
    client, data_dir, version = served
    body = client.get(f"/models/{version}/parameters").json()
    arrays = stored_arrays(data_dir, version)
    assert body["model_version"] == version
    assert body["hidden_units"] == arrays["W1"].shape[0]
    for name in ("W1", "b1", "W2", "b2", "mean", "std"):
        assert np.array_equal(np.array(body[name]), arrays[name]), name


def test_evaluation_counts_every_flower_by_true_and_predicted_species(
    served: tuple[TestClient, Path, str],
) -> None:
    client, data_dir, version = served
    response = client.get(f"/models/{version}/evaluation")
    assert response.status_code == 200, response.text
    body = response.json()
    raw, species = shipped_csv()
    o_s = probabilities(stored_arrays(data_dir, version), raw)
    truth = np.array([CLASSES.index(s) for s in species])
    expected = np.zeros((3, 3), dtype=int)
    for t, p in zip(truth, o_s.argmax(axis=1), strict=True):
        expected[t, p] += 1
    assert body["confusion_matrix"] == expected.tolist()
    assert body["rows"] == 150
    assert body["classes"] == list(CLASSES)
    assert body["accuracy"] == pytest.approx(np.trace(expected) / 150)
    assert body["loss"] == pytest.approx(-np.log(o_s[np.arange(150), truth]).mean(), rel=1e-9)
    assert body["accuracy"] > 0.9  # the default model is a good one


@pytest.mark.parametrize("view", ["evaluation", "parameters", "regions"])
def test_views_of_an_unknown_version_are_404(
    served: tuple[TestClient, Path, str], view: str
) -> None:
    client, _, _ = served
    assert_problem(
        client.get(f"/models/20200101T000000.000000Z-00000000/{view}"), 404, "no stored model"
    )
    assert_problem(client.get(f"/models/not-a-version/{view}"), 404)


# -- decision regions ----------------------------------------------------------------------------


def test_regions_predict_the_grid_with_the_other_features_at_their_means(
    served: tuple[TestClient, Path, str],
) -> None:
    client, data_dir, version = served
    response = client.get(
        f"/models/{version}/regions", params={"x": "sepal_width", "y": "petal_length", "steps": 7}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    raw, _ = shipped_csv()
    xs, ys = np.array(body["x"]["values"]), np.array(body["y"]["values"])
    assert body["x"]["feature"] == "sepal_width"
    assert body["y"]["feature"] == "petal_length"
    assert len(xs) == len(ys) == 7
    assert np.all(np.diff(xs) > 0)
    # the axes cover the data's range
    assert xs[0] <= raw[:, 1].min()
    assert xs[-1] >= raw[:, 1].max()
    assert ys[0] <= raw[:, 2].min()
    assert ys[-1] >= raw[:, 2].max()
    assert body["fixed"] == pytest.approx(
        {"sepal_length": raw[:, 0].mean(), "petal_width": raw[:, 3].mean()}, rel=1e-12
    )
    arrays = stored_arrays(data_dir, version)
    for i, yv in enumerate(ys):
        points = np.array(
            [[body["fixed"]["sepal_length"], xv, yv, body["fixed"]["petal_width"]] for xv in xs]
        )
        o_s = probabilities(arrays, points)
        assert body["class_index"][i] == o_s.argmax(axis=1).tolist()
        assert body["confidence"][i] == pytest.approx(o_s.max(axis=1), abs=5e-5)


def test_regions_use_the_given_fixed_values(served: tuple[TestClient, Path, str]) -> None:
    client, _, version = served
    # A long petal makes the whole sepal plane virginica; a short one, mostly setosa.
    grids = {
        length: client.get(
            f"/models/{version}/regions",
            params={
                "x": "sepal_length",
                "y": "sepal_width",
                "steps": 4,
                "petal_length": length,
                "petal_width": width,
            },
        ).json()
        for length, width in ((6.5, 2.3), (1.3, 0.2))
    }
    assert grids[6.5]["fixed"] == {"petal_length": 6.5, "petal_width": 2.3}
    assert {k for row in grids[6.5]["class_index"] for k in row} == {2}
    short = [k for row in grids[1.3]["class_index"] for k in row]
    assert short.count(0) > len(short) / 2


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"x": "petal_width", "y": "petal_width"}, "two different features"),
        ({"x": "petal"}, "x"),
        ({"steps": 1}, "steps"),
        ({"steps": 101}, "steps"),
        ({"steps": "many"}, "steps"),
        ({"sepal_length": -1}, "sepal_length"),
        ({"sepal_width": "inf"}, "sepal_width"),
        ({"petal_width": 101}, "petal_width"),
    ],
)
def test_regions_refuse_bad_parameters_naming_them(
    served: tuple[TestClient, Path, str], params: dict[str, Any], words: str
) -> None:
    client, _, version = served
    assert_problem(client.get(f"/models/{version}/regions", params=params), 422, words)


# -- training job events -------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job"])
def test_events_of_an_unknown_job_are_404(
    served: tuple[TestClient, Path, str], job_id: str
) -> None:
    client, _, _ = served
    assert_problem(client.get(f"/train/{job_id}/events"), 404, "no training job")


def test_events_of_an_ended_job_are_its_last_progress_then_end(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        response = client.post("/train", json={"hyperparameters": {"epochs": 30}}, headers=AUTH)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        job = wait_for(
            lambda: (j := client.get(f"/train/{job_id}").json())["status"] == "succeeded" and j,
            30,
            "job succeeded",
        )
        response = client.get(f"/train/{job_id}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = parse_events(response.text)
    assert [name for name, _ in events] == ["progress", "end"]
    progress, end = events[0][1], events[1][1]
    assert progress["status"] == "succeeded"
    assert progress["epoch"] == progress["epochs"] == 30
    assert progress["train_loss"] == job["progress"]["train_loss"]
    assert end == job


@pytest.mark.slow
def test_events_stream_live_progress_to_a_real_client(tmp_path: Path) -> None:
    """A real server and a real HTTP client: points arrive while the job runs, then the end."""
    with server_pool(tmp_path) as start:
        server = start(None, {"IRIS_API_TOKEN": TOKEN})
        with server.client() as client:
            job_id = start_job(client, LONG_JOB, server.auth())
            arrivals: list[tuple[float, str, Any]] = []
            timeout = httpx.Timeout(10.0, read=5.0)
            with client.stream("GET", f"/train/{job_id}/events", timeout=timeout) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                buffer = ""
                for chunk in stream.iter_text():
                    buffer += chunk
                    *blocks, buffer = buffer.split("\n\n")
                    for name, data in parse_events("\n\n".join(blocks) + "\n\n"):
                        arrivals.append((time.monotonic(), name, data))
                    if arrivals and arrivals[-1][1] == "end":
                        break
            final = client.get(f"/train/{job_id}").json()
    names = [name for _, name, _ in arrivals]
    assert names[-1] == "end"
    assert names.count("end") == 1
    live = [
        data for _, name, data in arrivals if name == "progress" and data["status"] == "running"
    ]
    epochs = [point["epoch"] for point in live if point["epoch"] > 0]
    assert len(epochs) >= 3, names  # several heartbeats' worth of points before the end
    assert epochs == sorted(epochs)
    assert len(set(epochs)) == len(epochs)
    assert all(point["train_loss"] > 0 for point in live if point["epoch"] > 0)
    assert arrivals[-1][2] == final
    assert final["status"] == "succeeded"
    assert final["progress"]["epoch"] == LONG_JOB["hyperparameters"]["epochs"]


def test_the_new_views_are_documented_in_openapi(served: tuple[TestClient, Path, str]) -> None:
    client, _, _ = served
    paths = client.get("/openapi.json").json()["paths"]
    events = paths["/train/{job_id}/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert "404" in events["responses"]
    for path in (
        "/datasets/iris",
        "/models/{version}/parameters",
        "/models/{version}/evaluation",
        "/models/{version}/regions",
    ):
        operation = paths[path]["get"]
        assert operation["summary"]
        assert "application/json" in operation["responses"]["200"]["content"]
    names = {p["name"] for p in paths["/models/{version}/regions"]["get"]["parameters"]}
    assert names == {"version", "x", "y", "steps", *FEATURES}
    assert "/" not in paths
    assert "/ui/{name}" not in paths
