"""The rollout across three replicas sharing PostgreSQL: one routing, one set of figures, one
decision."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from harness.api import canary_key, instances
from harness.models import random_model
from harness.postgres import PgCluster
from harness.replicas import AUTH, PREDICT, ReplicaSet
from harness.servers import wait_for
from model.data import load_iris
from service.postgres import PostgresModelStore

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.haproxy]

FOLLOW_SECONDS = 1.0  # the bound: every replica applies a routing change within 1 s
REQUESTS = 2000
WEIGHT = 0.25


@pytest.fixture(scope="module")
def replicas(postgres: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    with postgres.fresh_database() as url:
        replicas = ReplicaSet(
            url,
            tmp_path_factory.mktemp("rollout"),
            extra_env={"IRIS_MONITOR_FLUSH_SECONDS": "0.1", "IRIS_DRIFT_WINDOW": "500"},
        )
        replicas.start()
        try:
            yield replicas
        finally:
            replicas.stop()
            print(replicas.logs())


@pytest.fixture
def clients(replicas: ReplicaSet) -> Iterator[list[httpx.Client]]:
    made = [server.client() for server in replicas.servers]
    try:
        yield made
    finally:
        for client in made:
            client.close()


def new_version(replicas: ReplicaSet, seed: int) -> str:
    store = PostgresModelStore(replicas.database_url)
    try:
        return store.save(random_model(seed=seed), {})
    finally:
        store.close()


def put(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.put("/routing", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    routing: dict[str, Any] = answer.json()
    return routing


def all_follow(clients: list[httpx.Client], revision: int, started: float) -> float:
    """Seconds from ``started`` until every replica's GET /routing shows ``revision``."""
    for client in clients:
        wait_for(
            lambda c=client: c.get("/routing").json()["revision"] >= revision or None,
            5.0,
            "a replica to show the routing",
        )
    return time.monotonic() - started


def all_route(clients: list[httpx.Client], key: str, version: str, started: float) -> float:
    """Seconds from ``started`` until a request with ``key`` is answered by ``version`` on
    every replica: what each replica routes by, not what the database holds."""
    for client in clients:

        def answers(c: httpx.Client = client) -> bool | None:
            found = c.post("/predict", json=PREDICT, headers={"X-Routing-Key": key})
            return found.json()["model_version"] == version or None

        wait_for(answers, 5.0, "a replica to route by the change", interval=0.01)
    return time.monotonic() - started


def test_a_routing_change_reaches_every_replica_within_a_second(
    replicas: ReplicaSet, clients: list[httpx.Client]
) -> None:
    stable = clients[0].get("/routing").json()["stable"]
    canary = new_version(replicas, 21)
    key = canary_key(0.5)
    started = time.monotonic()
    put(clients[0], {"canary": {"version": canary, "weight": 0.5}})
    assert all_route(clients, key, canary, started) < FOLLOW_SECONDS
    started = time.monotonic()
    put(clients[1], {})
    assert all_route(clients, key, stable, started) < FOLLOW_SECONDS
    assert all(c.get("/routing").json()["canary"] is None for c in clients)


def test_the_split_and_the_keys_hold_through_the_balancer(
    replicas: ReplicaSet, clients: list[httpx.Client]
) -> None:
    stable = clients[0].get("/routing").json()["stable"]
    canary = new_version(replicas, 24)
    routing = put(clients[0], {"canary": {"version": canary, "weight": WEIGHT}})
    all_follow(clients, routing["revision"], time.monotonic())
    with httpx.Client(base_url=replicas.balancer_url, timeout=10.0) as balancer:
        served = Counter(
            balancer.post("/predict", json=PREDICT).json()["model_version"] for _ in range(REQUESTS)
        )
        assert set(served) == {stable, canary}
        share = served[canary] / REQUESTS
        assert abs(share - WEIGHT) < 5 * math.sqrt(WEIGHT * (1 - WEIGHT) / REQUESTS), served
        # Round robin sends a key's three requests to three replicas: one version still.
        met: dict[str, set[str]] = {}
        for i in range(300):
            key = f"user-{i % 100}"
            answer = balancer.post("/predict", json=PREDICT, headers={"X-Routing-Key": key})
            met.setdefault(key, set()).add(answer.json()["model_version"])
    assert all(len(versions) == 1 for versions in met.values())
    put(clients[0], {})


def test_every_replica_answers_monitoring_with_the_same_figures(
    replicas: ReplicaSet, clients: list[httpx.Client]
) -> None:
    # A version of its own, asked for by name: its counts are this test's alone (earlier
    # tests' last flushes may still be landing on the others').
    version = new_version(replicas, 25)
    body = PREDICT | {"model_version": version}
    for i, client in enumerate(clients):
        for _ in range(20 * (i + 1)):
            assert client.post("/predict", json=body).json()["model_version"] == version

    def figures() -> list[dict[str, Any]] | None:
        found = [c.get("/monitoring").json() for c in clients]
        mine = found[0]["versions"].get(version)
        if mine is None or mine["served"] != 120 or any(f != found[0] for f in found):
            return None
        return found

    wait_for(figures, 10.0, "the same figures on every replica")


def test_feedback_on_three_replicas_at_the_threshold_is_decided_once(
    replicas: ReplicaSet, clients: list[httpx.Client]
) -> None:
    iris = load_iris()
    canary = new_version(replicas, 22)
    rule = {"weight": 0.5, "promote_after": 90, "max_accuracy_drop": 0.0}
    routing = put(clients[0], {"canary": {"version": canary} | rule})
    all_follow(clients, routing["revision"], time.monotonic())
    parts = [np.arange(i, 150, 3)[:30] for i in range(3)]

    def send(i: int) -> dict[str, Any]:
        body = {
            "model_version": canary,
            "instances": instances(iris.raw[parts[i]]),
            "labels": iris.y[parts[i]].tolist(),
        }
        answer = clients[i].post("/feedback", json=body, headers=AUTH)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(send, range(3)))
    # Decided once: by the request whose labels completed the count, or in the same instant
    # by another replica's backstop (then no answer says so); the history has it once.
    decisions = [a["decision"] for a in answers if a["decision"] is not None]
    assert [d["event"] for d in decisions] in (["rolled_back"], [])
    history = clients[2].get("/routing/history").json()["history"]
    assert [e["event"] for e in history].count("rolled_back") == 1
    assert history[-1]["figures"]["labels"] == 90
    decided = clients[0].get("/routing").json()["revision"]
    all_follow(clients, decided, time.monotonic())
    assert all(c.get("/routing").json()["canary"] is None for c in clients)
    # The deletion of a version routing names is refused on any replica.
    shadow = new_version(replicas, 23)
    put(clients[0], {"shadow": {"version": shadow}})
    refused = clients[1].delete(f"/models/{shadow}", headers=AUTH)
    assert refused.status_code == 409, refused.text
    put(clients[0], {})
