"""The service on PostgreSQL (IRIS_DATABASE_URL): every route, two replicas, an outage.

The app runs through ASGI (TestClient) with its training children as real processes, on a
fresh database of the session's throwaway cluster (harness/postgres.py). Two apps on one
database are two replicas: an activation on one reaches the other by notification.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from harness.api import ROW, wait_job
from harness.postgres import PgCluster
from harness.servers import wait_for
from model.data import load_iris
from model.persistence import ModelStore
from model.train import Hyperparameters, train
from service.config import Settings
from service.main import create_app

pytestmark = pytest.mark.postgres

TOKEN = "postgres-service-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def replica(url: str, data_dir: Path, **overrides: Any) -> TestClient:
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        api_token=TOKEN,
        job_heartbeat_timeout=2.0,
        **overrides,
    )
    return TestClient(create_app(settings))


@pytest.fixture
def database(postgres: PgCluster) -> Iterator[str]:
    with postgres.fresh_database() as url:
        yield url


def test_every_route_works_on_the_database_and_the_data_directory_holds_no_model(
    database: str, tmp_path: Path
) -> None:
    with replica(database, tmp_path / "a") as client:
        ready = client.get("/readyz").json()
        assert ready["backend"] == "postgresql"
        assert ready["schema_version"] >= 2
        first = ready["model_version"]
        assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == first
        job_id = client.post("/train", json={"hyperparameters": {"epochs": 30}}, headers=AUTH)
        job = wait_job(client, job_id.json()["job_id"])
        assert job["status"] == "succeeded", job
        trained = job["model_version"]
        wait_for(lambda: client.get("/readyz").json()["model_version"] == trained, 5.0, "swap")
        listed = client.get("/models").json()
        assert listed["current"] == trained
        assert {m["version"] for m in listed["models"]} == {first, trained}
        assert client.get(f"/models/{trained}/history").json()["history"]
        back = client.post(f"/models/{first}/activate", headers=AUTH)
        assert back.status_code == 200, back.text
        assert client.post("/predict", json={"instances": [ROW]}).json()["model_version"] == first
        assert client.delete(f"/train/{job['job_id']}", headers=AUTH).status_code == 204
    assert not (tmp_path / "a" / "models").exists()
    assert not (tmp_path / "a" / "jobs.sqlite3").exists()


def test_an_activation_on_one_replica_reaches_the_other_within_a_second(
    database: str, tmp_path: Path
) -> None:
    with replica(database, tmp_path / "a") as a, replica(database, tmp_path / "b") as b:
        first = a.get("/readyz").json()["model_version"]
        assert b.get("/readyz").json()["model_version"] == first  # one default model
        model = train(load_iris(), Hyperparameters(epochs=5, seed=9)).model
        version = a.app.state.iris.store.save(model, {"note": "test"})  # type: ignore[attr-defined]
        assert a.post(f"/models/{version}/activate", headers=AUTH).status_code == 200
        started = time.monotonic()
        wait_for(
            lambda: b.get("/readyz").json()["model_version"] == version,
            1.0,
            "replica b serves the version activated on a",
            interval=0.01,
        )
        print(f"\nactivation reached the other replica in {time.monotonic() - started:.3f} s")


def test_delete_a_version_on_one_replica_and_the_other_stops_serving_it_pinned(
    database: str, tmp_path: Path
) -> None:
    with replica(database, tmp_path / "a") as a, replica(database, tmp_path / "b") as b:
        current = a.get("/readyz").json()["model_version"]
        response = a.post(
            "/train",
            json={"hyperparameters": {"epochs": 5}, "activate": False, "note": "to delete"},
            headers=AUTH,
        )
        job = wait_job(a, response.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["note"] == "to delete"
        doomed = job["model_version"]
        detail = b.get(f"/models/{doomed}").json()
        assert (detail["job_id"], detail["note"]) == (job["job_id"], "to delete")
        assert len(detail["data_sha256"]) == 64
        pinned = {"instances": [ROW], "model_version": doomed}
        for client in (a, b):  # both replicas keep it loaded
            assert client.post("/predict", json=pinned).json()["model_version"] == doomed
        assert a.delete(f"/models/{doomed}").status_code == 401
        wrong = a.delete(f"/models/{doomed}", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        refused = a.delete(f"/models/{current}", headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert "current version" in refused.json()["detail"]
        deleted = a.delete(f"/models/{doomed}", headers=AUTH)
        assert deleted.status_code == 204, deleted.text
        assert deleted.content == b""
        count = sql.SQL("SELECT count(*) FROM {} WHERE version = %s")
        with psycopg.connect(database) as conn:
            for table in ("model_versions", "model_activations"):
                query = count.format(sql.Identifier(table))
                assert conn.execute(query, (doomed,)).fetchone() == (0,)
        assert a.post("/predict", json=pinned).status_code == 404  # at once where deleted
        wait_for(
            lambda: b.post("/predict", json=pinned).status_code == 404,
            2.0,
            "replica b no longer serves the deleted version",
            interval=0.02,
        )
        unknown = b.delete(f"/models/{doomed}", headers=AUTH)
        assert unknown.status_code == 404, unknown.text
        assert b.post("/predict", json={"instances": [ROW]}).json()["model_version"] == current


def test_one_job_at_a_time_across_replicas(database: str, tmp_path: Path) -> None:
    with replica(database, tmp_path / "a") as a, replica(database, tmp_path / "b") as b:
        body = {"hyperparameters": {"epochs": 10_000, "hidden_units": 64}}
        first = a.post("/train", json=body, headers=AUTH)
        second = b.post("/train", json=body, headers=AUTH)
        assert first.status_code == 202, first.text
        assert second.status_code == 409, second.text
        assert second.json()["job_id"] == first.json()["job_id"]
        job_id = first.json()["job_id"]
        assert b.post(f"/train/{job_id}/cancel", headers=AUTH).status_code == 202
        assert wait_job(a, job_id)["status"] == "cancelled"


def test_a_database_outage_stops_no_prediction_and_training_returns_after_it(
    postgres: PgCluster, database: str, tmp_path: Path
) -> None:
    with replica(database, tmp_path / "a") as client:
        version = client.get("/readyz").json()["model_version"]
        postgres.stop("fast")
        try:
            for _ in range(20):
                answer = client.post("/predict", json={"instances": [ROW]})
                assert answer.status_code == 200, answer.text
                assert answer.json()["model_version"] == version
            assert client.get("/readyz").status_code == 200  # the model in memory serves
            refused = client.post("/train", json={}, headers=AUTH)
            assert refused.status_code == 503, refused.text
            assert "unavailable" in refused.json()["detail"]
            assert client.get("/train").status_code == 503
            activate = client.post(f"/models/{version}/activate", headers=AUTH)
            assert activate.status_code == 503, activate.text
        finally:
            postgres.start()

        def trains() -> str | None:
            response = client.post("/train", json={"hyperparameters": {"epochs": 5}}, headers=AUTH)
            return response.json()["job_id"] if response.status_code == 202 else None

        job_id = wait_for(trains, 20.0, "training accepted again after the outage", 0.2)
        assert wait_job(client, job_id)["status"] == "succeeded"


def test_a_replica_started_while_the_database_is_down_is_not_ready_until_it_is_back(
    postgres: PgCluster, database: str, tmp_path: Path
) -> None:
    postgres.stop("fast")
    try:
        client = replica(database, tmp_path / "a").__enter__()
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert "unavailable" in not_ready.json()["detail"]
    finally:
        postgres.start()
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 20.0, "ready once it is back")
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200
    finally:
        client.__exit__(None, None, None)


def test_migrate_copies_a_data_directory_once_verifying_every_version(
    database: str, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "data" / "models")
    for seed in (1, 2):
        result = train(load_iris(), Hyperparameters(epochs=5, seed=seed))
        store.save(result.model, result.record(Hyperparameters(epochs=5, seed=seed)), activate=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IRIS_")}
    env["IRIS_DATABASE_URL"] = database
    script = Path(sys.executable).with_name("iris-serve")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    runs = [
        subprocess.run(
            [*command, "migrate", str(tmp_path / "data")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    with replica(database, tmp_path / "replica") as client:
        assert client.get("/readyz").json()["model_version"] == store.current()
        assert {m["version"] for m in client.get("/models").json()["models"]} == set(
            store.versions()
        )
    assert runs[0].stdout != runs[1].stdout  # the second run copied nothing new


# -- what an outage shows, and to whom ----------------------------------------------------------

ROLE, PASSWORD = "iris_probe_role", "correct-horse-battery-staple"
SOME_VERSION = "20200101T000000.000000Z-0a0b0c0d"
SOME_JOB = "f" * 32


def database_answers(client: TestClient) -> dict[str, Any]:
    """The answers of every route that reads the database or a model, as an anonymous client
    (and POST /train, with the token)."""
    body = {"instances": [ROW]}
    tensor = {
        "name": "measurements",
        "shape": [1, 4],
        "datatype": "FP64",
        "data": list(ROW.values()),
    }
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/readyz", {}),
        ("GET", "/models", {}),
        ("GET", f"/models/{SOME_VERSION}", {}),
        ("GET", f"/models/{SOME_VERSION}/parameters", {}),
        ("GET", f"/models/{SOME_VERSION}/evaluation", {}),
        ("GET", "/train", {}),
        ("GET", f"/train/{SOME_JOB}", {}),
        ("GET", f"/train/{SOME_JOB}/events", {}),
        ("POST", "/predict", {"json": body}),
        ("POST", "/v2/models/iris/infer", {"json": {"inputs": [tensor]}}),
        ("GET", "/v2/health/ready", {}),
        ("GET", "/v2/models/iris", {}),
        ("GET", "/v2/models/iris/ready", {}),
        ("POST", "/train", {"json": {}, "headers": AUTH}),
    ]
    return {f"{method} {path}": client.request(method, path, **kw) for method, path, kw in calls}


def assert_nothing_revealed(answers: dict[str, Any], url: str, port: int) -> None:
    """No answer names the host, port, database, user or password of ``url``."""
    dbname = url.rsplit("/", 1)[1]
    for call, answer in answers.items():
        text = answer.text.replace(SOME_VERSION, "").replace(SOME_JOB, "")  # the request's own
        text += "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
        for secret in ("127.0.0.1", "localhost", str(port), dbname, ROLE, PASSWORD):
            assert secret not in text, (
                f"{call} answers {answer.status_code} naming {secret}: {text}"
            )
        if answer.status_code == 503:
            assert "unavailable" in answer.text, (call, answer.text)


def assert_logged_once(caplog: pytest.LogCaptureFixture, url: str, port: int, *why: str) -> None:
    """The log names where and why (never the password), in one line per outage."""
    dbname = url.rsplit("/", 1)[1]
    lines = [r for r in caplog.records if "database unavailable:" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    line = lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING
    for detail in ("127.0.0.1", str(port), dbname, ROLE, *why):
        assert detail in line, (detail, line)
    assert PASSWORD not in caplog.text
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks for an outage"


def own_database(postgres: PgCluster, url: str, password: str) -> str:
    """``url``'s database owned by the password role, and the URL that logs in as it."""
    postgres.password_role(ROLE, PASSWORD)
    dbname = url.rsplit("/", 1)[1]
    with postgres.connect("postgres") as conn:
        owner = sql.SQL("ALTER DATABASE {} OWNER TO {}")
        conn.execute(owner.format(sql.Identifier(dbname), sql.Identifier(ROLE)))
    return f"postgresql://{ROLE}:{password}@127.0.0.1:{postgres.port}/{dbname}"


def test_a_wrong_password_is_in_the_log_and_in_no_answer(
    postgres: PgCluster, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_database(postgres, database, "not-the-password")
    caplog.set_level(logging.WARNING)
    with replica(url, tmp_path / "a") as client:
        answers = database_answers(client)
        again = database_answers(client)  # the same failure: not logged again
    assert answers["GET /readyz"].status_code == 503
    assert answers["GET /readyz"].json()["detail"].startswith("not ready:")
    assert answers["GET /train"].status_code == 503
    assert answers["GET /models"].status_code == 503
    assert_nothing_revealed(
        answers | {f"again {k}": v for k, v in again.items()}, url, postgres.port
    )
    assert_logged_once(caplog, url, postgres.port, "password authentication failed")


def test_a_database_outage_is_in_the_log_and_in_no_answer(
    postgres: PgCluster, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_database(postgres, database, PASSWORD)
    with replica(url, tmp_path / "a") as client:
        assert client.get("/readyz").status_code == 200  # it serves, as the role
        caplog.set_level(logging.WARNING)
        postgres.stop("fast")
        try:
            answers = database_answers(client)
            again = database_answers(client)
        finally:
            postgres.start()
    assert answers["GET /readyz"].status_code == 200  # the model in memory still serves
    assert answers["POST /predict"].status_code == 200
    assert answers["GET /train"].status_code == 503
    assert answers["GET /models"].status_code == 503
    assert answers["POST /train"].status_code == 503
    assert_nothing_revealed(
        answers | {f"again {k}": v for k, v in again.items()}, url, postgres.port
    )
    assert_logged_once(caplog, url, postgres.port)


def test_a_replica_started_during_an_outage_says_only_that_the_database_is_unavailable(
    postgres: PgCluster, database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_database(postgres, database, PASSWORD)
    caplog.set_level(logging.WARNING)
    postgres.stop("fast")
    try:
        with replica(url, tmp_path / "a") as client:
            answers = database_answers(client)
    finally:
        postgres.start()
    assert answers["GET /readyz"].status_code == 503
    assert "the database is unavailable" in answers["GET /readyz"].json()["detail"]
    assert_nothing_revealed(answers, url, postgres.port)
    assert_logged_once(caplog, url, postgres.port)
