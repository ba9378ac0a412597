"""The rollout on a real server with two workers: the figures are shared across processes.

Every expected figure is computed here: shares from the answers' ``model_version``, classes
and accuracies from the stored weights with NumPy, never read back from the service.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from harness.api import ROW, canary_key, instances
from harness.models import random_model
from harness.servers import ServerProcess, post_fresh_connection, wait_for
from model.data import FEATURES, Dataset, load_iris
from model.network import Model, forward
from model.persistence import ModelStore
from model.train import Hyperparameters, train

pytestmark = pytest.mark.slow

TOKEN = "rollout-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {
    "IRIS_WORKERS": "2",
    "IRIS_API_TOKEN": TOKEN,
    "IRIS_MONITOR_FLUSH_SECONDS": "0.1",
    "IRIS_DRIFT_WINDOW": "1000",
    "IRIS_LOG_LEVEL": "warning",
}
REQUESTS = 2000
WEIGHT = 0.25


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", tmp_path / "server.log", ENV)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(process.log())


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def store(server: ServerProcess) -> ModelStore:
    return ModelStore(server.data_dir / "models")


def classes(model: Model, raw: np.ndarray[Any, Any]) -> Any:
    return forward(model.params, model.standardizer.transform(raw)).o_s.argmax(axis=1)


def in_threads(count: int, work: Callable[[httpx.Client, int], Any], url: str) -> list[Any]:
    """``work(client, i)`` for i in range(count), on 8 threads with a client each (8
    connections, spread over both workers by the kernel)."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def run(i: int) -> Any:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=10.0)
            clients.append(local.client)
        return work(local.client, i)

    try:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(run, range(count)))
    finally:
        for client in clients:
            client.close()


def predict(client: httpx.Client, body: dict[str, Any], **headers: str) -> str:
    answer = client.post("/predict", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    version: str = answer.json()["model_version"]
    return version


def monitoring_when(client: httpx.Client, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        figures: dict[str, Any] = client.get("/monitoring").json()
        return figures if done(figures) else None

    return wait_for(probe, 15.0, "the monitoring figures")


def last_event(client: httpx.Client) -> dict[str, Any]:
    """The routing history's newest entry."""
    entry: dict[str, Any] = client.get("/routing/history").json()["history"][-1]
    return entry


def every_worker_routes_to(server: ServerProcess, canary: str, weight: float) -> None:
    """Wait until both workers route by the plan just put: a routing key the plan sends to
    ``canary`` is answered by it on each. The worker that took the PUT applies the plan at
    once, the other at its next flush. These requests are no shadow's: the canary's answers
    are not shadowed, and a worker still on the old plan (none here) has no shadow."""
    key = canary_key(weight)
    routed: set[int] = set()

    def both() -> bool:
        _, payload, worker = post_fresh_connection(
            server, "/predict", {"instances": [ROW]}, headers={"X-Routing-Key": key}
        )
        if payload["model_version"] == canary and worker is not None:
            routed.add(worker)
        return len(routed) == 2

    wait_for(both, 10.0, "both workers routing by the plan", interval=0.01)


def test_the_canary_split_keys_and_pins_counted_across_both_workers(
    server: ServerProcess,
    client: httpx.Client,
) -> None:
    stable = client.get("/routing").json()["stable"]
    canary = store(server).save(random_model(seed=5), {})
    body = {"canary": {"version": canary, "weight": WEIGHT}}
    assert client.put("/routing", json=body, headers=AUTH).status_code == 200

    # Both workers answer, and both route: fresh connections name the worker that answered.
    fresh = [post_fresh_connection(server, "/predict", {"instances": [ROW]}) for _ in range(30)]
    assert len({worker for _, _, worker in fresh} - {None}) == 2, fresh
    served = Counter(
        in_threads(REQUESTS, lambda c, i: predict(c, {"instances": [ROW]}), server.url)
    )
    share = served[canary] / REQUESTS
    assert set(served) == {stable, canary}
    assert abs(share - WEIGHT) < 5 * math.sqrt(WEIGHT * (1 - WEIGHT) / REQUESTS), served

    # A key always meets the same version, whichever worker and connection it reaches.
    keys = [f"user-{i}" for i in range(200)]
    met = in_threads(
        600, lambda c, i: (keys[i % 200], predict(c, {"instances": [ROW]}, **{
            "X-Routing-Key": keys[i % 200]})), server.url,
    )  # fmt: skip
    by_key: dict[str, set[str]] = {}
    for key, version in met:
        by_key.setdefault(key, set()).add(version)
    assert all(len(versions) == 1 for versions in by_key.values())
    keyed = sum(versions == {canary} for versions in by_key.values())
    assert abs(keyed / 200 - WEIGHT) < 5 * math.sqrt(WEIGHT * (1 - WEIGHT) / 200)

    # A pinned version is never re-routed.
    pinned = Counter()
    for version in (stable, canary):
        body = {"instances": [ROW], "model_version": version}
        answers = in_threads(50, lambda c, i, b=body: predict(c, b), server.url)
        assert set(answers) == {version}
        pinned[version] += len(answers)

    # Every answer counted once, by whichever worker gave it.
    expected = served + Counter(v for _, v in met) + pinned
    expected += Counter(payload["model_version"] for _, payload, _ in fresh)

    def counted(figures: dict[str, Any]) -> bool:
        versions = figures["versions"]
        return {v: versions[v]["served"] for v in (stable, canary)} == dict(expected)

    versions = monitoring_when(client, counted)["versions"]
    assert versions[canary]["role"] == "canary"
    assert versions[stable]["role"] == "stable"


def test_feedback_shadow_and_the_rule_decided_once(
    server: ServerProcess, client: httpx.Client
) -> None:
    iris = load_iris()
    stable = client.get("/routing").json()["stable"]
    models = store(server)
    stable_model = models.load(stable).model
    shadow_model, bad_model = random_model(seed=11), random_model(seed=12)
    shadow, bad = models.save(shadow_model, {}), models.save(bad_model, {})
    rule = {"weight": 0.5, "promote_after": 100, "max_accuracy_drop": 0.02}
    body = {"canary": {"version": bad} | rule, "shadow": {"version": shadow}}
    assert client.put("/routing", json=body, headers=AUTH).status_code == 200
    every_worker_routes_to(server, bad, rule["weight"])

    # Predictions in batches of 10: stable's rows go to the shadow too.
    batches = [iris.raw[i : i + 10] for i in range(0, 150, 10)] * 4
    answered = in_threads(
        len(batches), lambda c, i: predict(c, {"instances": instances(batches[i])}), server.url
    )
    by_stable = np.vstack([rows for rows, v in zip(batches, answered, strict=True) if v == stable])
    agreed = int(
        np.count_nonzero(classes(stable_model, by_stable) == classes(shadow_model, by_stable))
    )

    def shadowed(figures: dict[str, Any]) -> bool:
        found = figures["versions"][shadow]["shadow"]
        return found is not None and found["count"] == len(by_stable)

    figures = monitoring_when(client, shadowed)["versions"][shadow]["shadow"]
    assert figures == {
        "count": len(by_stable),
        "agreed": agreed,
        "agreement": agreed / len(by_stable),
    }

    # Feedback at the threshold from four clients at once: decided once, by one of them.
    parts = [np.arange(i, 150, 4)[:30] for i in range(4)]  # 120 labelled rows in all

    def send(c: httpx.Client, i: int) -> dict[str, Any]:
        rows = iris.raw[parts[i]]
        labelled = {
            "model_version": bad,
            "instances": instances(rows),
            "labels": iris.y[parts[i]].tolist(),
        }
        answer = c.post("/feedback", json=labelled, headers=AUTH)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    answers = in_threads(4, send, server.url)
    # Decided once: by the request whose labels completed the count, which says so, or in
    # the same instant by the other worker's backstop; the history has it either way.
    decisions = [a["decision"] for a in answers if a["decision"] is not None]
    assert [d["event"] for d in decisions] in (["rolled_back"], [])
    assert last_event(client)["event"] == "rolled_back"
    labelled = np.concatenate(parts)
    correct = int(np.count_nonzero(classes(bad_model, iris.raw[labelled]) == iris.y[labelled]))
    accuracy = monitoring_when(client, lambda f: True)["versions"][bad]["feedback"]
    assert accuracy == {"count": 120, "correct": correct, "accuracy": correct / 120}
    assert sum(a["correct"] for a in answers) == correct

    # A canary as good as stable (the same training) is promoted after its labels.
    hp = Hyperparameters(seed=0)
    result = train(iris, hp)
    good = models.save(result.model, result.record(hp))
    body = {"canary": {"version": good} | rule, "shadow": {"version": shadow}}
    assert client.put("/routing", json=body, headers=AUTH).status_code == 200
    labelled_all = {
        "model_version": good,
        "instances": instances(iris.raw),
        "labels": iris.y.tolist(),
    }
    assert client.post("/feedback", json=labelled_all, headers=AUTH).status_code == 200
    decision = last_event(client)
    assert decision["event"] == "promoted"
    assert decision["figures"]["canary_correct"] == decision["figures"]["stable_correct"]

    # Both workers serve it: answers on fresh connections all name it.
    def both_serve_it() -> bool | None:
        answers = [post_fresh_connection(server, "/predict", {"instances": [ROW]})
                   for _ in range(10)]  # fmt: skip
        return all(payload["model_version"] == good for _, payload, _ in answers) or None

    wait_for(both_serve_it, 5.0, "both workers serving the promoted canary")
    history = client.get("/routing/history").json()["history"]
    assert [entry["event"] for entry in history] == [
        "routing_changed", "rolled_back", "routing_changed", "promoted"
    ]  # fmt: skip
    assert history[1]["figures"]["labels"] == 120
    assert history[3]["figures"]["canary"] == good


def test_drift_over_both_workers_flags_a_shifted_feature_alone(
    server: ServerProcess, client: httpx.Client
) -> None:
    iris: Dataset = load_iris()
    # The Iris rows themselves, 7 times over (more than the window): nothing drifted.
    batches = [iris.raw[i : i + 30] for i in range(0, 150, 30)] * 7
    in_threads(
        len(batches), lambda c, i: predict(c, {"instances": instances(batches[i])}), server.url
    )

    def full(figures: dict[str, Any]) -> bool:
        return figures["drift"]["rows"] == 1000

    drift = monitoring_when(client, full)["drift"]
    assert all(f["psi"] is not None and not f["drifted"] for f in drift["features"].values()), drift

    shifted = iris.raw.copy()
    shifted[:, FEATURES.index("petal_length")] += 2.0
    batches = [shifted[i : i + 30] for i in range(0, 150, 30)] * 7

    def flagged(figures: dict[str, Any]) -> bool:
        return any(f["drifted"] for f in figures["drift"]["features"].values())

    in_threads(
        len(batches), lambda c, i: predict(c, {"instances": instances(batches[i])}), server.url
    )
    drift = monitoring_when(client, flagged)["drift"]
    drifted = [name for name, f in drift["features"].items() if f["drifted"]]
    assert drifted == ["petal_length"], drift
