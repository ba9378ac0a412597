"""IRIS_ACCESS_LOG: one JSON line per request on stdout, and X-Request-ID, from a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.api import ROW
from harness.servers import ServerProcess, wait_for

pytestmark = pytest.mark.slow


def lines(server: ServerProcess) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"request_id"' in line:
            found.append(json.loads(line))
    return found


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("access-log")
    env = {"IRIS_ACCESS_LOG": "true", "IRIS_API_TOKEN": "access-log-token-0123456789"}
    server = ServerProcess(tmp / "data", tmp / "server.log", env).start()
    try:
        yield server
    finally:
        server.stop()


def test_every_request_gets_one_json_line_with_the_id_it_was_answered_with(
    logged: ServerProcess,
) -> None:
    with logged.client() as http:
        ok = http.post("/predict", json={"instances": [ROW]})
        bad = http.post("/predict", json={"instances": []})
        missing = http.get("/models/20200101T000000.000000Z-00000000")
    answers = [(ok, "POST", "/predict", 200), (bad, "POST", "/predict", 422)]
    answers.append((missing, "GET", "/models/20200101T000000.000000Z-00000000", 404))
    ids = [response.headers["x-request-id"] for response, *_ in answers]
    assert len(set(ids)) == 3
    written = wait_for(
        lambda: (
            (found := [e for e in lines(logged) if e["request_id"] in ids])
            and len(found) == 3
            and found
        ),
        5.0,
        "three access lines",
    )
    by_id = {entry["request_id"]: entry for entry in written}
    for (response, method, path, status), request_id in zip(answers, ids, strict=True):
        entry = by_id[request_id]
        assert (entry["method"], entry["path"], entry["status"]) == (method, path, status)
        assert response.status_code == status
        assert 0 < entry["ms"] < 10_000


def test_a_sane_client_request_id_is_kept_and_an_insane_one_replaced(
    logged: ServerProcess,
) -> None:
    with logged.client() as http:
        kept = http.get("/healthz", headers={"X-Request-ID": "trace-42.a:b_c"})
        replaced = http.get("/healthz", headers={"X-Request-ID": "no spaces, please"})
    assert kept.headers["x-request-id"] == "trace-42.a:b_c"
    assert replaced.headers["x-request-id"] != "no spaces, please"
    assert " " not in replaced.headers["x-request-id"]


def test_without_the_setting_there_is_no_line_and_no_request_id(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log").start()
    try:
        with server.client() as http:
            response = http.post("/predict", json={"instances": [ROW]})
        assert response.status_code == 200
        assert "x-request-id" not in response.headers
        assert lines(server) == []
        assert '"POST /predict HTTP/1.1" 200' not in server.log()  # nor uvicorn's text line
    finally:
        server.stop()
