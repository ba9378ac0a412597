"""Three real replicas on one PostgreSQL behind a real HAProxy (issue 12, proof with real parts).

One module-scoped set-up: a fresh database of the session's throwaway cluster, three
``iris-serve`` processes (each with its own empty data directory, IRIS_DATABASE_URL, the same
token, IRIS_JOB_HEARTBEAT_TIMEOUT=2) and HAProxy on 127.0.0.1 in front (tests/haproxy.py).
Before each test, a replica that an earlier test killed is replaced by a fresh one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.api import wait_job
from harness.fairness import Probe, Upload, status_of
from harness.postgres import PgCluster
from harness.replicas import AUTH, PREDICT, ReplicaSet, finished_at
from harness.servers import DeadlineError, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.haproxy]

HEARTBEAT_TIMEOUT = 2.0
FOLLOW_SECONDS = 1.0  # the bound: every replica serves a new version within 1 s
ROW_DATA = [5.1, 3.5, 1.4, 0.2]
LONG_JOB = {"hyperparameters": {"epochs": 10_000, "hidden_units": 256}}


@pytest.fixture(scope="module")
def replica_set(
    postgres: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaSet]:
    with postgres.fresh_database() as url:
        replicas = ReplicaSet(
            url, tmp_path_factory.mktemp("replicas"), heartbeat_timeout=HEARTBEAT_TIMEOUT
        )
        replicas.start()
        try:
            yield replicas
        finally:
            replicas.stop()
            print(replicas.logs())


@pytest.fixture
def replicas(replica_set: ReplicaSet, postgres: PgCluster) -> ReplicaSet:
    if not postgres.running:
        postgres.start()
    replica_set.replace_dead()
    return replica_set


@pytest.fixture
def balancer(replicas: ReplicaSet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replicas.balancer_url, timeout=10.0) as client:
        yield client


def served_counts(replicas: ReplicaSet) -> dict[str, int]:
    """Requests HAProxy sent to each replica so far (its ``stot`` counter)."""
    assert replicas.balancer is not None
    text = replicas.balancer.command("show stat").lstrip("# ")
    return {
        row["svname"]: int(row["stot"])
        for row in csv.DictReader(io.StringIO(text))
        if row["pxname"] == "replicas" and row["svname"] not in {"FRONTEND", "BACKEND"}
    }


def cancel_and_wait(client: httpx.Client, job_id: str) -> None:
    client.post(f"/train/{job_id}/cancel", headers=AUTH)
    assert wait_job(client, job_id, seconds=30.0)["status"] in ("cancelled", "failed")


def test_predictions_through_the_balancer_reach_every_replica(
    replicas: ReplicaSet, balancer: httpx.Client
) -> None:
    versions = {replicas.serving(server) for server in replicas.servers}
    assert len(versions) == 1, versions  # one default model, made by the first replica
    before = served_counts(replicas)
    answers = [balancer.post("/predict", json=PREDICT) for _ in range(30)]
    assert [a.status_code for a in answers] == [200] * 30
    assert {a.json()["model_version"] for a in answers} == versions
    assert {a.json()["predictions"][0]["label"] for a in answers} == {"setosa"}
    after = served_counts(replicas)
    assert all(after[name] - before[name] >= 5 for name in after), (before, after)


def test_a_job_through_the_balancer_is_served_by_every_replica_within_a_second(
    replicas: ReplicaSet, balancer: httpx.Client
) -> None:
    old = replicas.serving(replicas.servers[0])
    started = balancer.post("/train", json={"hyperparameters": {"epochs": 50}}, headers=AUTH)
    assert started.status_code == 202, started.text
    job, seen = replicas.follow_job(balancer, started.json()["job_id"], old, 60.0)
    assert job["status"] == "succeeded", job
    assert job["activated"] is True
    lag = max(seen.values()) - finished_at(job)
    print(f"\njob success (finished_at) to the last of 3 replicas serving it: {lag:.3f} s")
    assert lag <= FOLLOW_SECONDS, (lag, seen, job["finished_at"])
    for server in replicas.servers:
        assert replicas.serving(server) == job["model_version"]
        # the replica's own disk holds no model and no jobs database
        assert not (server.data_dir / "models").exists()
        assert not server.jobs_db.exists()


def test_concurrent_trains_on_different_replicas_give_one_202(replicas: ReplicaSet) -> None:
    count = 9
    barrier = threading.Barrier(count)
    answers: list[httpx.Response | None] = [None] * count

    def post(index: int) -> None:
        server = replicas.servers[index % len(replicas.servers)]
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            barrier.wait(5.0)
            answers[index] = client.post("/train", json=LONG_JOB, headers=AUTH)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    statuses = Counter(a.status_code for a in answers if a is not None)
    winners = [a for a in answers if a is not None and a.status_code == 202]
    try:
        assert statuses == {202: 1, 409: count - 1}, [
            (a.status_code, a.text) for a in answers if a is not None
        ]
        job_id = winners[0].json()["job_id"]
        for answer in answers:
            assert answer is not None
            if answer.status_code == 409:
                assert answer.json()["job_id"] == job_id, answer.text
                assert job_id in answer.json()["detail"]
    finally:
        with httpx.Client(base_url=replicas.servers[0].url, timeout=10.0) as client:
            for winner in winners:
                cancel_and_wait(client, winner.json()["job_id"])


def test_a_killed_replica_fails_its_job_and_the_others_serve_on(
    replicas: ReplicaSet, balancer: httpx.Client
) -> None:
    started = balancer.post("/train", json=LONG_JOB, headers=AUTH)
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    wait_for(
        lambda: balancer.get(f"/train/{job_id}").json()["status"] == "running", 30.0, "running"
    )
    owner = wait_for(replicas.training_owner, 10.0, "the replica whose child trains")
    index, child = owner
    killed_at = time.monotonic()
    replicas.kill(index, child)
    survivors = [s for i, s in enumerate(replicas.servers) if i != index]

    # The balancer keeps answering while the job is reaped: no failed prediction.
    failures: list[Any] = []
    job: dict[str, Any] = {}
    deadline = time.monotonic() + HEARTBEAT_TIMEOUT + 10.0
    while time.monotonic() < deadline:
        answer = balancer.post("/predict", json=PREDICT)
        if answer.status_code != 200:
            failures.append((answer.status_code, answer.text))
        with httpx.Client(base_url=survivors[0].url, timeout=5.0) as survivor:
            job = survivor.get(f"/train/{job_id}").json()
        if job["status"] != "running":
            break
        time.sleep(0.05)
    failed_after = time.monotonic() - killed_at
    print(f"\nkilled replica's job marked {job['status']} after {failed_after:.2f} s")
    assert job["status"] == "failed", job
    assert "heartbeat" in job["error"], job
    # by the heartbeat timeout (the last heartbeat was at most 0.25 s before the kill)
    assert failed_after >= HEARTBEAT_TIMEOUT - 0.5
    assert failures == []
    for server in survivors:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            assert client.get(f"/train/{job_id}").json()["status"] == "failed"
            assert client.post("/predict", json=PREDICT).status_code == 200
    answers = [balancer.post("/predict", json=PREDICT).status_code for _ in range(30)]
    assert answers == [200] * 30


def test_activating_an_old_version_on_one_replica_reaches_all_within_a_second(
    replicas: ReplicaSet, balancer: httpx.Client
) -> None:
    listed = balancer.get("/models").json()
    current = listed["current"]
    if len(listed["models"]) < 2:  # this test alone: make a second version first
        started = balancer.post("/train", json={"hyperparameters": {"epochs": 20}}, headers=AUTH)
        assert started.status_code == 202, started.text
        assert wait_job(balancer, started.json()["job_id"], seconds=60.0)["status"] == "succeeded"
        listed = balancer.get("/models").json()
        current = listed["current"]
        replicas.wait_all_serve(current, 5.0)
    old = next(m["version"] for m in listed["models"] if m["version"] != current)
    assert {replicas.serving(s) for s in replicas.servers} == {current}
    with httpx.Client(base_url=replicas.servers[1].url, timeout=10.0) as one:
        answer = one.post(f"/models/{old}/activate", headers=AUTH)
    answered_at = time.time()
    assert answer.status_code == 200, answer.text
    seen = replicas.wait_all_serve(old, 5.0)
    lag = max(seen.values()) - answered_at
    print(f"\nactivate's 200 to the last of 3 replicas serving it: {lag:.3f} s")
    assert lag <= FOLLOW_SECONDS, (lag, seen)
    assert balancer.get("/models").json()["current"] == old


def test_a_database_outage_fails_no_prediction_and_training_works_after_it(
    replicas: ReplicaSet, balancer: httpx.Client, postgres: PgCluster
) -> None:
    version = replicas.serving(replicas.servers[0])
    stop = threading.Event()
    results: Counter[str] = Counter()

    def load() -> None:
        with httpx.Client(base_url=replicas.balancer_url, timeout=5.0) as client:
            for _ in range(20_000):  # bounded; stopped by the event long before
                if stop.is_set():
                    return
                try:
                    answer = client.post("/predict", json=PREDICT)
                    ok = answer.status_code == 200 and answer.json()["model_version"] == version
                    results["ok" if ok else f"status {answer.status_code}"] += 1
                except httpx.HTTPError as error:
                    results[type(error).__name__] += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_for(lambda: results["ok"] >= 20, 10.0, "predictions through the balancer")
        postgres.stop("fast")
        outage_started = results["ok"]
        wait_for(
            lambda: results["ok"] >= outage_started + 20,
            10.0,
            "predictions answered with the database down",
        )
        refused = balancer.post("/train", json={}, headers=AUTH)
        assert refused.status_code == 503, refused.text
        assert "unavailable" in refused.json()["detail"]
        assert balancer.get("/train").status_code == 503
        activate = balancer.post(f"/models/{version}/activate", headers=AUTH)
        assert activate.status_code == 503, activate.text
        gradients = {"instances": PREDICT["instances"], "labels": ["setosa"]}
        assert balancer.post("/gradients", json=gradients).status_code == 200
        infer = {
            "inputs": [
                {"name": "measurements", "shape": [1, 4], "datatype": "FP64", "data": ROW_DATA}
            ]
        }
        assert balancer.post("/v2/models/iris/infer", json=infer).status_code == 200
        for server in replicas.servers:  # ready: the model in memory serves
            assert httpx.get(f"{server.url}/readyz", timeout=5.0).status_code == 200
        # The scenario's window: the outage lasts two of the replicas' 1 s re-reads of the
        # pointer (and reaps), which meet the dead database while the predictions go on.
        time.sleep(2.0)
        during = results["ok"] - outage_started
    finally:
        if not postgres.running:
            postgres.start()
        back_at = time.monotonic()
        restarted = results["ok"]
        # the load goes on across the restart (checked below: a failure in the block above
        # must not be hidden by this wait's)
        with contextlib.suppress(DeadlineError):
            wait_for(lambda: results["ok"] >= restarted + 20, 10.0, "predictions after the restart")
        stop.set()
        loader.join(30.0)
    print(f"\n/predict through the balancer: {dict(results)}; {during} answered while down")
    assert set(results) == {"ok"}, results
    assert during > 50
    assert results["ok"] >= restarted + 20, "no predictions answered after the restart"

    def trains() -> str | None:
        answer = balancer.post("/train", json={"hyperparameters": {"epochs": 20}}, headers=AUTH)
        return answer.json()["job_id"] if answer.status_code == 202 else None

    job_id = wait_for(trains, 30.0, "training accepted again after the outage", interval=0.2)
    print(f"training accepted {time.monotonic() - back_at:.2f} s after the database was back")
    job = wait_job(balancer, job_id, seconds=60.0)
    assert job["status"] == "succeeded", job
    replicas.wait_all_serve(job["model_version"], FOLLOW_SECONDS + 1.0)


def test_replicas_keep_no_state_in_their_data_directories(replicas: ReplicaSet) -> None:
    for server in replicas.servers:
        assert server.data_dir.is_dir()
        assert not (server.data_dir / "models").exists()
        assert not server.jobs_db.exists()


@pytest.mark.parametrize("how", ["nothing", "fast"])
def test_small_predictions_through_the_balancer_are_served_whatever_uploads_do(
    replicas: ReplicaSet, how: str
) -> None:
    """40 uploads declaring 16 MiB, sending nothing or as fast as they can, through HAProxy
    to the three replicas: every one-row prediction through HAProxy is answered 200 meanwhile;
    the uploads are refused (HAProxy's 408 for a body that does not come, the replicas' 503 for
    bodies past their budget, 400 for those read whole: spaces are not JSON)."""
    assert replicas.balancer is not None
    port = replicas.balancer.port
    uploads = [Upload(port, how) for _ in range(40)]
    with Probe(port).running() as probe:
        for upload in uploads:
            upload.thread.start()
        for upload in uploads:
            upload.thread.join(90)
    probe.check(f"through HAProxy to 3 replicas, 40 uploads of 16 MiB sending {how}")
    statuses = [status_of(u.answer) for u in uploads]
    print(f"uploads answered {sorted(set(statuses))}")
    assert set(statuses) <= ({408} if how == "nothing" else {400, 503, 0}), statuses
