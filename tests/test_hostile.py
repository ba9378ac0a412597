"""Hostile input: each a 4xx naming the problem, and the server unharmed.

Malformed, ambiguous, oversized and path-like requests to the native endpoints (/predict,
/gradients, /train, /train/{id}, /models/{v}, /models/{v}/activate) and, where they apply,
to the /v2 endpoints. Native errors are problem documents (application/problem+json with
status, title and a detail naming the problem); /v2 errors are ``{"error": "..."}``.

"Unharmed": after every test, the ``client`` fixture checks that the app still answers the
same /predict with the same 200 body and that no file of the data directory (models,
CURRENT) changed or appeared; jobs a test starts are killed before they could train. The
nastiest inputs are also sent over raw sockets to ``iris-serve`` as a real process (the
``slow`` tests at the end), which must keep serving the same model with no traceback in its
log. Cases tests/test_api.py and tests/test_v2.py already cover are not repeated here;
stalled and vanishing uploads are tests/test_faults.py's.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from harness.api import (
    AUTH,
    ROW,
    VIRGINICA,
    assert_error,
    assert_problem,
    end_job,
    make_client,
    synthetic_samples,
)
from harness.servers import ServerProcess
from model.data import CLASSES, FEATURES, load_iris

LIMIT = 2**20  # IRIS_MAX_BODY_BYTES here: room for 100k levels of nesting
MAX_INSTANCES = 200
MAX_TRAIN_ROWS = 500
JSON = {"content-type": "application/json"}
INFER = "/v2/models/iris/infer"
DEEP = 100_000
IRIS = load_iris()
SAMPLES = [
    dict(zip(FEATURES, map(float, raw), strict=True)) | {"species": CLASSES[k]}
    for raw, k in zip(IRIS.raw.tolist(), IRIS.y.tolist(), strict=True)
]
# Every hyperparameter at a bound at once; epochs at its top, so the job is ended long
# before it could finish.
AT_THE_BOUNDS = [
    {
        "hidden_units": 1024,
        "epochs": 10_000,
        "batch_size": 10_000,
        "learning_rate": 10,
        "momentum": 0,
        "weight_decay": 0,
        "validation_fraction": 0.5,
        "seed": 2**63 - 1,
        "early_stopping": True,
        "patience": 10_000,
    },
    {
        "hidden_units": 1,
        "epochs": 10_000,
        "batch_size": 1,
        "learning_rate": 5e-324,  # the smallest float above 0
        "momentum": 0.9999999999999999,  # the largest float below 1
        "weight_decay": 1.7976931348623157e308,  # the largest finite float
        "validation_fraction": 0,
        "seed": 0,
        "early_stopping": False,
        "patience": 1,
    },
]


@dataclass(frozen=True)
class Hostile:
    client: TestClient
    data_dir: Path
    baseline: bytes  # the /predict answer every test must leave unchanged


def files(data_dir: Path) -> dict[str, str]:
    """sha256 of every file under the data directory but the jobs and monitoring databases
    (every answer adds to the monitoring counts)."""
    return {
        str(path.relative_to(data_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file() and not path.name.startswith(("jobs.sqlite3", "monitoring.sqlite3"))
    }


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    data_dir = tmp_path_factory.mktemp("hostile")
    with make_client(
        data_dir,
        max_body_bytes=LIMIT,
        max_instances=MAX_INSTANCES,
        max_train_rows=MAX_TRAIN_ROWS,
    ) as client:
        baseline = client.post("/predict", json={"instances": [ROW, VIRGINICA]})
        assert baseline.status_code == 200, baseline.text
        yield Hostile(client, data_dir, baseline.content)


@pytest.fixture
def client(hostile: Hostile) -> Iterator[TestClient]:
    """The shared client; after the test, the server must still serve the same model."""
    before = files(hostile.data_dir)
    yield hostile.client
    after = hostile.client.post("/predict", json={"instances": [ROW, VIRGINICA]})
    assert after.status_code == 200, after.text
    assert after.content == hostile.baseline
    assert files(hostile.data_dir) == before


def post(client: TestClient, path: str, body: bytes | str, **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return client.post(path, content=content, headers=JSON | headers)


def train(client: TestClient, body: bytes | str | dict[str, Any]) -> httpx.Response:
    """POST /train with the token; a job it starts is ended before the answer is checked."""
    content = json.dumps(body) if isinstance(body, dict) else body
    response = post(client, "/train", content, **AUTH)
    if response.status_code == 202:
        end_job(client.app, response.json()["job_id"])
    return response


def infer_body(data: Any = None, **tensor: Any) -> dict[str, Any]:
    measurements = {
        "name": "measurements",
        "shape": [1, 4],
        "datatype": "FP64",
        "data": [5.1, 3.5, 1.4, 0.2] if data is None else data,
    }
    return {"inputs": [measurements | tensor]}


def row_json(**changes: str) -> str:
    """ROW as JSON text, with some values replaced by raw JSON text (NaN, 1e309, ...)."""
    return "{" + ", ".join(f'"{k}": {changes.get(k, json.dumps(v))}' for k, v in ROW.items()) + "}"


# -- Content-Type and Content-Encoding ------------------------------------------------------


NATIVE_BODIES = {
    "/predict": {"instances": [ROW]},
    "/gradients": {"instances": [ROW], "labels": ["setosa"]},
    "/train": {"hyperparameters": {"epochs": 1}, "activate": False},
}


@pytest.mark.parametrize("path", ["/gradients", "/train"])
@pytest.mark.parametrize(
    "media",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonl",
        "json",
    ],
)
def test_json_without_a_json_content_type_is_415_naming_the_type(
    client: TestClient, path: str, media: str | None
) -> None:
    headers = AUTH | ({"content-type": media} if media else {})
    response = client.post(path, content=json.dumps(NATIVE_BODIES[path]), headers=headers)
    expected = media.split(";")[0] if media else "no Content-Type"
    assert_problem(response, 415, "application/json", expected)


@pytest.mark.parametrize(
    "media", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json"]
)
def test_predict_without_a_json_content_type_is_415_naming_the_type(
    client: TestClient, media: str
) -> None:
    response = client.post(
        "/predict", content=json.dumps({"instances": [ROW]}), headers={"content-type": media}
    )
    assert_problem(response, 415, media.split(";", 1)[0])


@pytest.mark.parametrize(
    "media", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge+json"]
)
def test_json_content_type_spellings_are_accepted(client: TestClient, media: str) -> None:
    response = client.post(
        "/predict", content=json.dumps({"instances": [ROW]}), headers={"content-type": media}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/gradients", "/train"])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "identity, gzip", "GZIP"])
def test_compressed_native_bodies_are_415_naming_the_coding(
    client: TestClient, path: str, coding: str
) -> None:
    raw = json.dumps(NATIVE_BODIES[path]).encode()
    body = zlib.compress(raw) if coding == "deflate" else gzip.compress(raw)
    response = client.post(path, content=body, headers=JSON | AUTH | {"content-encoding": coding})
    assert_problem(response, 415, repr(coding.lower()))


def test_identity_content_encoding_is_plain_json(client: TestClient) -> None:
    body = json.dumps({"instances": [ROW]})
    response = post(client, "/predict", body, **{"content-encoding": "identity"})
    assert response.status_code == 200, response.text


def test_v2_compressed_body_inflating_past_the_limit_on_the_versioned_route_is_413(
    client: TestClient,
) -> None:
    version = client.get("/readyz").json()["model_version"]
    bomb = gzip.compress(b" " * (LIMIT + 1))
    response = client.post(
        f"/v2/models/iris/versions/{version}/infer",
        content=bomb,
        headers={"content-encoding": "gzip"},
    )
    assert_error(response, 413, "IRIS_MAX_BODY_BYTES")


# -- bytes that are not UTF-8 or not JSON ---------------------------------------------------

NOT_JSON = [
    (b"\xff\xfe\x00\x01", "JSON"),
    (b"\xef\xbb\xbf" + json.dumps({"instances": [ROW]}).encode(), "JSON"),  # a UTF-8 BOM
    (json.dumps({"instances": [ROW]}).encode("utf-16"), "JSON"),
    (json.dumps({"instances": [ROW]}).encode() + b"\x00", "JSON"),
    (b'{"instances": [], "model_version": "\xc3\x28"}', "JSON"),  # invalid UTF-8 in a string
    (b'{"instances": [], "model_version": "\\ud800"}', "JSON"),  # a lone surrogate
    (b'{"instances": [', "JSON"),
    (b"", "JSON"),
    (b"{'instances': []}", "JSON"),
    (b"instances=1", "JSON"),
]


@pytest.mark.parametrize("path", ["/predict", "/gradients"])
@pytest.mark.parametrize(("body", "words"), NOT_JSON)
def test_bytes_that_are_not_utf8_json_are_400(
    client: TestClient, path: str, body: bytes, words: str
) -> None:
    assert_problem(post(client, path, body), 400, words)


@pytest.mark.parametrize(("body", "words"), [case for case in NOT_JSON if case[0]])
def test_bytes_that_are_not_utf8_json_are_400_for_train(
    client: TestClient, body: bytes, words: str
) -> None:
    assert_problem(train(client, body), 400, words)


@pytest.mark.parametrize("body", [b"null", b'"instances"', b"[]", b"5.1", b"true"])
def test_json_that_is_not_an_object_is_422_naming_the_body(client: TestClient, body: bytes) -> None:
    for path in ("/predict", "/gradients"):
        assert_problem(post(client, path, body), 422, "body")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(infer_body()).encode("utf-16"),
        b"\xef\xbb\xbf" + json.dumps(infer_body()).encode(),
        b'{"id": "\\udc00", "inputs": []}',
        json.dumps(infer_body()).encode() + b"\x00",
    ],
)
def test_v2_bytes_that_are_not_utf8_json_are_400(client: TestClient, body: bytes) -> None:
    assert_error(client.post(INFER, content=body), 400, "not valid JSON")


# -- duplicate keys: 400 naming the key ------------------------------------------------------

ROW_TEXT = json.dumps(ROW)


@pytest.mark.parametrize(
    ("path", "body", "key"),
    [
        (
            "/predict",
            f'{{"instances": [{ROW_TEXT}], "model_version": null, "model_version": null}}',
            "model_version",
        ),
        (
            "/gradients",
            f'{{"instances": [{ROW_TEXT}], "labels": [0], "labels": ["setosa"]}}',
            "labels",
        ),
        (
            "/gradients",
            f'{{"instances": [{ROW_TEXT}], "labels": [0], "reduction": "sum", '
            '"reduction": "mean"}',
            "reduction",
        ),
    ],
)
def test_duplicate_keys_are_400_naming_the_key(
    client: TestClient, path: str, body: str, key: str
) -> None:
    assert_problem(post(client, path, body), 400, "duplicate key", key)


@pytest.mark.parametrize("rows", [1, 2, 9, 60, 110, 111, MAX_INSTANCES])
@pytest.mark.parametrize(
    ("second", "key"),
    [
        (', "instances" :[]', "instances"),
        (',"instances"\t: []', "instances"),
        (', "model_version":null ,"model_version" : null', "model_version"),
    ],
)
def test_a_key_written_twice_is_refused_at_every_body_size(
    client: TestClient, rows: int, second: str, key: str
) -> None:
    """White space before the colon of the second key once let a body of over 8 KiB (110
    rows and more here) through the many-row fast path, served from the first array."""
    body = '{"instances":[' + ",".join([ROW_TEXT] * rows) + "]" + second + "}"
    assert_problem(post(client, "/predict", body), 400, "duplicate key", key)
    v2 = json.dumps(
        {
            "inputs": [
                {
                    "name": "measurements",
                    "shape": [rows, 4],
                    "datatype": "FP64",
                    "data": [list(ROW.values())] * rows,
                }
            ]
        }
    )
    twice = v2[:-1] + ', "inputs" :[]}'
    assert_error(client.post(INFER, content=twice, headers=JSON), 400, "duplicate key")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"activate": false, "activate": false}', "activate"),
        ('{"hyperparameters": {"epochs": 5, "epochs": 6}, "activate": false}', "epochs"),
        (
            '{"dataset": {"samples": '
            + json.dumps(SAMPLES[::10])[:-1]
            + ', {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,'
            ' "petal_width": 0.2, "species": "setosa", "species": "virginica"}]},'
            ' "activate": false}',
            "species",
        ),
    ],
)
def test_duplicate_keys_in_a_training_request_are_400_naming_the_key(
    client: TestClient, body: str, key: str
) -> None:
    assert_problem(train(client, body), 400, "duplicate key", key)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        # the duplicate written with an escape: the same key once unescaped
        (
            '{"instances": [{"sepal_length": 5.1, "sepal\\u005flength": 99.0, "sepal_width": 3.5,'
            ' "petal_length": 1.4, "petal_width": 0.2}]}',
            "sepal_length",
        ),
        # a plain duplicate in one row, made up for by an escaped key in the next
        (
            '{"instances": [{"sepal_length": 5.1, "sepal_length": 6.0, "sepal_width": 3.5,'
            ' "petal_length": 1.4, "petal_width": 0.2}, {"sepal\\u005flength": 6.7,'
            ' "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}]}',
            "sepal_length",
        ),
        ('{"instances": [], "\\u0069nstances": [' + ROW_TEXT + "]}", "instances"),
    ],
)
def test_duplicate_keys_spelled_with_escapes_are_400_naming_the_key(
    client: TestClient, body: str, key: str
) -> None:
    assert_problem(post(client, "/predict", body), 400, "duplicate key", key)


@pytest.mark.parametrize(
    "body",
    [
        # the last value breaks a rule: the duplicate, not the rule, is the problem
        '{"instances": [{"sepal_length": 5.1, "sepal_length": 500, "sepal_width": 3.5,'
        ' "petal_length": 1.4, "petal_width": 0.2}]}',
        '{"instances": [{"sepal_length": 5.1, "sepal_length": "x", "sepal_width": 3.5,'
        ' "petal_length": 1.4, "petal_width": 0.2}]}',
    ],
)
def test_duplicate_keys_are_400_even_when_one_of_the_values_is_invalid(
    client: TestClient, body: str
) -> None:
    assert_problem(post(client, "/predict", body), 400, "duplicate key", "sepal_length")


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"inputs": [], "inputs": ' + json.dumps(infer_body()["inputs"]) + "}", "inputs"),
        (json.dumps(infer_body())[:-3] + ', "datatype": "FP32"}]}', "datatype"),
        (json.dumps(infer_body() | {"id": "a"})[:-1] + ', "id": "b"}', "id"),
        (
            json.dumps(infer_body() | {"parameters": {"p": 1}}).replace(
                '{"p": 1}', '{"p": 1, "p": 2}'
            ),
            "p",
        ),
        (
            json.dumps(infer_body() | {"outputs": [{"name": "label"}]}).replace(
                '{"name": "label"}', '{"name": "label", "name": "probabilities"}'
            ),
            "name",
        ),
        (json.dumps(infer_body())[:-3] + ', "d\\u0061ta": [6.7, 3.0, 5.2, 2.3]}]}', "data"),
    ],
)
def test_v2_duplicate_keys_are_400_naming_the_key(client: TestClient, body: str, key: str) -> None:
    assert_error(client.post(INFER, content=body), 400, "duplicate key", key)


# -- deep nesting ---------------------------------------------------------------------------


def nested(levels: int, inner: str = "") -> str:
    return "[" * levels + inner + "]" * levels


@pytest.mark.parametrize(
    "body",
    [
        nested(DEEP),
        '{"instances": ' + nested(DEEP) + "}",
        '{"instances": [{"sepal_length": ' + '{"a": ' * DEEP + "1" + "}" * DEEP + "}]}",
        "[" * (3 * DEEP),  # never closed
    ],
    ids=["array", "instances", "object", "unterminated"],
)
def test_json_nested_100k_levels_deep_is_refused_naming_json(client: TestClient, body: str) -> None:
    # 100,000 arrays are more than any row limit needs: refused by counting, before parsing
    for path in ("/predict", "/gradients"):
        assert_problem(post(client, path, body), 422, "more JSON than")
    assert_problem(train(client, body), 422, "more JSON than")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            json.dumps(infer_body()).replace("[5.1, 3.5, 1.4, 0.2]", nested(DEEP, "5.1")),
            ["more JSON than"],
        ),
        (
            json.dumps(infer_body() | {"parameters": {"p": 0}}).replace(
                ": 0}", ": " + nested(DEEP) + "}"
            ),
            ["more JSON than"],
        ),
        (nested(DEEP), ["body", "object"]),
    ],
    ids=["data", "parameters", "body"],
)
def test_v2_json_nested_100k_levels_deep_is_400(
    client: TestClient, body: str, words: list[str]
) -> None:
    assert_error(client.post(INFER, content=body), 400, *words)


def test_v2_data_nested_deeper_than_the_shape_is_400_naming_how(client: TestClient) -> None:
    body = infer_body(data=json.loads(nested(100, "5.1, 3.5, 1.4, 0.2")))
    assert_error(client.post(INFER, content=json.dumps(body)), 400, "nested as")


# -- bodies over the limit -------------------------------------------------------------------


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON, padded with spaces to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


def chunks(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("path", ["/predict", "/gradients", "/train"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_at_the_limit_is_read_and_one_byte_more_is_413(
    client: TestClient, path: str, chunked: bool
) -> None:
    body = NATIVE_BODIES[path] | (
        {"hyperparameters": {"epochs": 10_000}} if path == "/train" else {}
    )
    for size, status in ((LIMIT, 202 if path == "/train" else 200), (LIMIT + 1, 413)):
        content: Any = chunks(padded(body, size)) if chunked else padded(body, size)
        response = client.post(path, content=content, headers=JSON | AUTH)
        assert ("content-length" in response.request.headers) is not chunked
        if status == 413:
            assert_problem(response, 413, "too large", f"limit is {LIMIT} bytes")
            assert response.headers["connection"] == "close"
        else:
            assert response.status_code == status, response.text
            if status == 202:
                end_job(client.app, response.json()["job_id"])


def test_a_declared_length_over_the_limit_is_413_without_reading_the_body(
    client: TestClient,
) -> None:
    declared = str(10**15)
    response = client.post("/gradients", content=b"{}", headers=JSON | {"content-length": declared})
    assert_problem(response, 413, f"Content-Length {declared}")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_v2_body_over_the_limit_is_413_as_a_protocol_error(
    client: TestClient, chunked: bool
) -> None:
    body = padded(infer_body(), LIMIT + 1)
    content: Any = chunks(body) if chunked else body
    assert_error(client.post(INFER, content=content), 413, "IRIS_MAX_BODY_BYTES")


# -- wrong methods: 405 naming the method, Allow listing exactly the right ones ---------------

VERSION_LIKE = "20200101T000000.000000Z-00000000"
JOB_LIKE = "0" * 32
ALLOWED = {
    "/predict": {"POST"},
    "/gradients": {"POST"},
    "/train": {"GET", "POST"},
    f"/train/{JOB_LIKE}": {"GET", "DELETE"},
    f"/train/{JOB_LIKE}/cancel": {"POST"},
    "/limits": {"GET"},
    "/models": {"GET"},
    f"/models/{VERSION_LIKE}": {"GET", "DELETE"},
    f"/models/{VERSION_LIKE}/activate": {"POST"},
    "/healthz": {"GET"},
    "/readyz": {"GET"},
    "/metrics": {"GET"},
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")


@pytest.mark.parametrize(
    ("path", "method"),
    [
        (path, method)
        for path, allowed in ALLOWED.items()
        for method in METHODS
        if method not in allowed
    ],
)
def test_wrong_method_is_405_naming_it_and_allow_lists_every_method_of_the_path(
    client: TestClient, path: str, method: str
) -> None:
    response = client.request(method, path, headers=AUTH)
    assert_problem(response, 405, method, path)
    allow = {m.strip() for m in response.headers["allow"].split(",")}
    assert allow - {"HEAD"} == ALLOWED[path], response.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", INFER),
        ("DELETE", INFER),
        ("PATCH", f"/v2/models/iris/versions/{VERSION_LIKE}/infer"),
        ("POST", "/v2/models/iris"),
        ("POST", "/v2/models/iris/ready"),
        ("PUT", "/v2/health/ready"),
    ],
)
def test_v2_wrong_method_is_405_naming_it(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert_error(response, 405, method)
    assert response.headers["allow"]


# -- numbers as strings or booleans, NaN, Infinity, 1e309, integers past 2**64 ---------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('"5.1"', "valid number"),
        ("true", "valid number"),
        ("null", "valid number"),
        ("[5.1]", "valid number"),
        ("1e309", "finite"),
        ("-1e309", "finite"),
        ("1e-400", "greater than 0"),  # underflows to 0
        (str(2**64), "less than or equal to 100"),
        (str(-(2**64)), "greater than 0"),
        ("1" + "0" * 400, "finite"),
    ],
)
def test_gradients_refuse_a_measurement_that_is_no_finite_number_in_range(
    client: TestClient, value: str, words: str
) -> None:
    body = '{"instances": [' + row_json(petal_width=value) + '], "labels": [0]}'
    problem = assert_problem(
        post(client, "/gradients", body), 422, "instances.0.petal_width", words
    )
    assert problem["errors"][0]["loc"] == ["instances", 0, "petal_width"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "nan", "inf"])
def test_non_finite_literals_are_refused_naming_json_or_the_field(
    client: TestClient, literal: str
) -> None:
    predict = '{"instances": [' + row_json(sepal_width=literal) + "]}"
    gradients = predict[:-1] + ', "labels": [0]}'
    for path, body in (("/predict", predict), ("/gradients", gradients)):
        response = post(client, path, body)
        assert response.status_code in (400, 422), response.text
        detail = assert_problem(response, response.status_code)["detail"]
        assert "JSON" in detail or "sepal_width" in detail, detail


def test_a_number_with_a_million_digits_is_refused_at_once(client: TestClient) -> None:
    huge = "1" + "0" * 900_000
    started = time.perf_counter()
    for path in ("/predict", "/gradients"):
        body = '{"instances": [' + row_json(sepal_length=huge) + '], "labels": [0]}'
        if path == "/predict":
            body = body.replace(', "labels": [0]', "")
        assert_problem(post(client, path, body), 400, "number out of range")
    took = time.perf_counter() - started
    print(f"\ntwo million-digit numbers refused in {took * 1000:.0f} ms")
    # A bound, not speed: refusing takes milliseconds, while reading such a number into an
    # int takes seconds (quadratic in its digits).
    assert took < 2.0


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"learning_rate": "0.1"}, "learning_rate"),
        ({"learning_rate": True}, "learning_rate"),
        ({"momentum": "0.5"}, "momentum"),
        ({"weight_decay": False}, "weight_decay"),
        ({"validation_fraction": "0.2"}, "validation_fraction"),
        ({"hidden_units": True}, "hidden_units"),
        ({"batch_size": "16"}, "batch_size"),
        ({"seed": False}, "seed"),
        ({"patience": "10"}, "patience"),
        ({"early_stopping": "true", "validation_fraction": 0.2}, "early_stopping"),
        ({"early_stopping": 1, "validation_fraction": 0.2}, "early_stopping"),
    ],
)
def test_train_refuses_hyperparameters_given_as_strings_or_booleans(
    client: TestClient, hyperparameters: dict[str, Any], field: str
) -> None:
    body = {"hyperparameters": {"epochs": 10_000} | hyperparameters, "activate": False}
    assert_problem(train(client, body), 422, f"hyperparameters.{field}")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"activate": 0}, "activate"),
        ({"activate": "false"}, "activate"),
        ({"activate": "yes"}, "activate"),
        ({"activate": None}, "activate"),
        ({"min_validation_accuracy": "0.5"}, "min_validation_accuracy"),
        ({"min_validation_accuracy": True}, "min_validation_accuracy"),
    ],
)
def test_train_refuses_flags_and_gates_of_the_wrong_type(
    client: TestClient, changes: dict[str, Any], field: str
) -> None:
    body = {"hyperparameters": {"epochs": 10_000, "validation_fraction": 0.2}} | changes
    assert_problem(train(client, body), 422, field)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"learning_rate": NaN', "learning_rate"),
        ('"momentum": Infinity', "momentum"),
        ('"weight_decay": 1e309', "weight_decay"),
        ('"validation_fraction": -1e309', "validation_fraction"),
        ('"learning_rate": 1e-400', "learning_rate"),  # underflows to 0
        (f'"seed": {2**64}', "seed"),
        (f'"hidden_units": {2**64}', "hidden_units"),
        (f'"epochs": {-(2**64)}', "epochs"),
        (f'"batch_size": 1{"0" * 400}', "batch_size"),
        (f'"patience": {2**63}', "patience"),
    ],
)
def test_train_refuses_non_finite_and_huge_hyperparameters(
    client: TestClient, raw: str, field: str
) -> None:
    response = train(client, '{"hyperparameters": {' + raw + '}, "activate": false}')
    assert response.status_code in (400, 422), response.text
    detail = assert_problem(response, response.status_code)["detail"]
    assert field in detail or "JSON" in detail, detail


@pytest.mark.parametrize("value", ['"5.1"', "true", "null", "NaN", "1e309", str(2**64)])
def test_train_refuses_a_sample_measurement_that_is_no_finite_number_in_range(
    client: TestClient, value: str
) -> None:
    samples = json.dumps(SAMPLES[::10])
    sample = '{"sepal_length": ' + value + ', "sepal_width": 3.5, "petal_length": 1.4, '
    sample += '"petal_width": 0.2, "species": "setosa"}'
    body = '{"dataset": {"samples": ' + samples[:-1] + ", " + sample + ']}, "activate": false}'
    response = train(client, body)
    assert response.status_code in (400, 422), response.text
    detail = assert_problem(response, response.status_code)["detail"]
    assert "dataset.samples.15.sepal_length" in detail or "JSON" in detail, detail


@pytest.mark.parametrize("limit", [str(2**64), "-1", "0", "1e3", "true", "NaN"])
def test_job_list_refuses_a_limit_that_is_no_count(client: TestClient, limit: str) -> None:
    assert_problem(client.get("/train", params={"limit": limit}), 422, "query.limit")


# -- empty, oversized and ragged batches; unknown labels --------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [], "labels": []}, "instances"),
        ({"instances": [ROW], "labels": []}, "labels"),
        ({"instances": [ROW] * (MAX_INSTANCES + 1), "labels": [0] * 201}, "201 rows"),
        ({"instances": [[5.1, 3.5, 1.4, 0.2]], "labels": [0]}, "instances.0"),
        ({"instances": [ROW, [6.7, 3.0, 5.2]], "labels": [0, 2]}, "instances.1"),
        ({"instances": [{**ROW, "sepal_length": [5.1, 5.2]}], "labels": [0]}, "sepal_length"),
        ({"instances": [ROW], "labels": [[0]]}, "labels.0"),
        ({"instances": [ROW], "labels": 0}, "labels"),
        ({"instances": ROW, "labels": [0]}, "instances"),
    ],
)
def test_gradients_refuse_empty_oversized_and_ragged_batches(
    client: TestClient, body: dict[str, Any], words: str
) -> None:
    assert_problem(client.post("/gradients", json=body), 422, words)


def test_batches_of_exactly_the_row_limit_are_answered(client: TestClient) -> None:
    rows = [ROW] * MAX_INSTANCES
    assert client.post("/predict", json={"instances": rows}).status_code == 200
    body = {"instances": rows, "labels": [0] * MAX_INSTANCES}
    assert client.post("/gradients", json=body).status_code == 200


@pytest.mark.parametrize(
    "label", [-1, 2**64, 2.5, "Setosa", "setosa ", "0", "", None, {"name": "setosa"}, "rose"]
)
def test_gradients_refuse_an_unknown_label_naming_it(client: TestClient, label: Any) -> None:
    body = {"instances": [ROW, VIRGINICA], "labels": [0, label]}
    assert_problem(client.post("/gradients", json=body), 422, "labels.1")


@pytest.mark.parametrize("species", ["Setosa", "", 0, None, ["setosa"]])
def test_train_refuses_a_sample_of_unknown_species_naming_it(
    client: TestClient, species: Any
) -> None:
    samples = [*SAMPLES[::10], {**SAMPLES[0], "species": species}]
    body = {"dataset": {"samples": samples}, "activate": False}
    assert_problem(train(client, body), 422, "dataset.samples.15.species")


@pytest.mark.parametrize(
    ("samples", "words"),
    [
        ([], "dataset.samples"),
        (SAMPLES[:14], "dataset.samples"),  # fewer than 15 rows
        ([{k: v for k, v in s.items() if k != "species"} for s in SAMPLES[::10]], "species"),
        ([{**s, "colour": "blue"} for s in SAMPLES[::10]], "colour"),
        ([[*s.values()] for s in SAMPLES[::10]], "dataset.samples.0"),
        (SAMPLES[:50], "too few: versicolor (0), virginica (0)"),
        ((SAMPLES * 4)[: MAX_TRAIN_ROWS + 1], f"{MAX_TRAIN_ROWS + 1} rows"),
    ],
)
def test_train_refuses_empty_oversized_and_ragged_datasets(
    client: TestClient, samples: list[Any], words: str
) -> None:
    assert_problem(train(client, {"dataset": {"samples": samples}, "activate": False}), 422, words)


def test_train_accepts_a_dataset_of_exactly_the_row_limit(client: TestClient) -> None:
    samples = (SAMPLES * 4)[:MAX_TRAIN_ROWS]
    body = {"dataset": {"samples": samples}, "hyperparameters": {"epochs": 10_000}}
    response = train(client, body | {"activate": False})
    assert response.status_code == 202, response.text
    assert response.json()["dataset"] == {"source": "request", "rows": MAX_TRAIN_ROWS}


# -- hyperparameters at and past every bound --------------------------------------------------


@pytest.mark.parametrize("hyperparameters", AT_THE_BOUNDS)
def test_train_accepts_every_hyperparameter_at_its_bounds(
    client: TestClient, hyperparameters: dict[str, Any]
) -> None:
    response = train(client, {"hyperparameters": hyperparameters, "activate": False})
    assert response.status_code == 202, response.text
    assert response.json()["hyperparameters"] == hyperparameters


def test_train_accepts_the_quality_gate_at_its_bounds(client: TestClient) -> None:
    for gate in (0, 1):
        body = {
            "hyperparameters": {"epochs": 10_000, "validation_fraction": 0.2},
            "min_validation_accuracy": gate,
            "activate": False,
        }
        response = train(client, body)
        assert response.status_code == 202, response.text
        assert response.json()["min_validation_accuracy"] == gate


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"patience": 0}, "patience"),
        ({"patience": 10_001}, "patience"),
        ({"seed": 2**63}, "seed"),
        ({"validation_fraction": -0.01}, "validation_fraction"),
        ({"validation_fraction": 0.5000000000000001}, "validation_fraction"),
        ({"learning_rate": 10.000000000000002}, "learning_rate"),
        ({"momentum": -5e-324}, "momentum"),
        ({"hidden_units": -1}, "hidden_units"),
        ({"batch_size": -(2**63)}, "batch_size"),
        ({"epochs": None}, "epochs"),
        ({"hidden_units": 1.5}, "hidden_units"),
    ],
)
def test_train_refuses_hyperparameters_past_their_bounds_naming_them(
    client: TestClient, hyperparameters: dict[str, Any], field: str
) -> None:
    body = {"hyperparameters": hyperparameters, "activate": False}
    assert_problem(train(client, body), 422, f"hyperparameters.{field}")


@pytest.mark.parametrize("gate", [-0.01, 1.01, -1e309])
def test_train_refuses_a_quality_gate_past_its_bounds(client: TestClient, gate: float) -> None:
    body = '{"hyperparameters": {"validation_fraction": 0.2}, "activate": false, '
    body += f'"min_validation_accuracy": {gate!r}' + "}"
    response = train(client, body.replace("-inf", "-1e309"))
    assert_problem(response, 422, "min_validation_accuracy")


@pytest.mark.parametrize(
    ("body", "section"),
    [
        ({"hyperparameters": None}, "hyperparameters"),
        ({"hyperparameters": []}, "hyperparameters"),
        ({"dataset": []}, "dataset"),
        ({"dataset": {"samples": None}}, "dataset.samples"),
        ({"dataset": {"rows": SAMPLES[:15]}}, "dataset.rows"),
        ({"hyperparameters": {"epochs": 5}, "extra": True}, "extra"),
    ],
)
def test_train_refuses_malformed_sections_naming_them(
    client: TestClient, body: dict[str, Any], section: str
) -> None:
    assert_problem(train(client, body | {"activate": False}), 422, section)


# -- ids and versions that try to be paths ----------------------------------------------------

PATH_LIKE_VERSIONS = [
    "..%2F..%2Fapi_token",
    "..%2F..%2Fmodels%2FCURRENT",
    "%2E%2E",
    "%2E",
    "CURRENT",
    ".bootstrap.lock",
    f"{VERSION_LIKE}%00",
    f"{VERSION_LIKE}%0A",
    f"{VERSION_LIKE}%2F..",
    f"..%5C..%5C{VERSION_LIKE}",
    "%252E%252E%252Fapi_token",  # encoded twice
    "a" * 10_000,
    VERSION_LIKE.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"}),  # fullwidth
    "20200101T000000.000000Z-ABCDEF12",  # hex digits in capitals
]


@pytest.mark.parametrize("version", PATH_LIKE_VERSIONS)
def test_versions_that_try_to_be_paths_are_404_and_touch_nothing(
    client: TestClient, version: str
) -> None:
    assert_problem(client.get(f"/models/{version}"), 404)
    assert_problem(client.post(f"/models/{version}/activate", headers=AUTH), 404)
    for pinned in (
        f"/v2/models/iris/versions/{version}",
        f"/v2/models/iris/versions/{version}/ready",
    ):
        assert_error(client.get(pinned), 404)
    infer = f"/v2/models/iris/versions/{version}/infer"
    assert_error(client.post(infer, content=json.dumps(infer_body())), 404)


@pytest.mark.parametrize(
    "version",
    [
        "../api_token",
        "/etc/passwd",
        f"{VERSION_LIKE}\n",
        f"{VERSION_LIKE}/../x",
        f"..\\{VERSION_LIKE}",
        f"{VERSION_LIKE}\x00",
        "",
        "CURRENT",
        VERSION_LIKE + "0",
    ],
)
def test_body_versions_that_try_to_be_paths_are_422_naming_model_version(
    client: TestClient, version: str
) -> None:
    for path, body in (
        ("/predict", {"instances": [ROW]}),
        ("/gradients", {"instances": [ROW], "labels": [0]}),
    ):
        response = client.post(path, json=body | {"model_version": version})
        assert_problem(response, 422, "model_version")


@pytest.mark.parametrize(
    "job_id",
    [
        "..%2F..%2Fjobs.sqlite3",
        "%2E%2E%2Fapi_token",
        JOB_LIKE.upper().replace("0", "A"),
        f"{JOB_LIKE}%00",
        f"{JOB_LIKE}%0A",
        JOB_LIKE + "0",
        "0" * 31,
        "'; DROP TABLE jobs; --",
        "x" * 10_000,
    ],
)
def test_job_ids_that_try_to_be_paths_are_404_for_reading_and_cancelling(
    client: TestClient, job_id: str
) -> None:
    assert_problem(client.get(f"/train/{job_id}"), 404)
    assert_problem(client.post(f"/train/{job_id}/cancel", headers=AUTH), 404)
    assert_problem(client.delete(f"/train/{job_id}", headers=AUTH), 404)


# -- a training process that dies before it has read its data ---------------------------------


def test_a_training_process_killed_before_reading_its_data_leaves_no_pipe_open(
    tmp_path: Path,
) -> None:
    """The job fails naming the signal, and the parent's end of the pipe is closed."""
    samples = synthetic_samples(700)  # 2100 rows: more than a pipe's buffer holds
    body = {"dataset": {"samples": samples}, "hyperparameters": {"epochs": 10_000}}
    with make_client(tmp_path, max_train_rows=3000, max_body_bytes=LIMIT) as client:
        response = client.post("/train", json=body | {"activate": False}, headers=AUTH)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        state = client.app.state.iris  # type: ignore[attr-defined]
        with state.launcher.lock:
            child = state.launcher.children[job_id]
        child.kill()  # long before its interpreter has started reading stdin
        assert child.stdin is not None
        try:
            deadline = time.monotonic() + 20.0
            while (job := client.get(f"/train/{job_id}").json())["status"] != "failed":
                assert time.monotonic() < deadline, job
                time.sleep(0.01)
            assert "SIGKILL" in job["error"], job
            assert child.stdin.closed, "the payload pipe was left open (a descriptor leaks)"
        finally:
            with contextlib.suppress(OSError):  # not to leak it past this test
                child.stdin.close()
        assert client.post("/predict", json={"instances": [ROW]}).status_code == 200


# -- iris-serve as a real process, over raw sockets --------------------------------------------

RAW_TOKEN = "hostile-raw-socket-token-0123456789"
RAW_LIMIT = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("hostile-server")
    env = {"IRIS_API_TOKEN": RAW_TOKEN, "IRIS_MAX_BODY_BYTES": str(RAW_LIMIT)}
    process = ServerProcess(data_dir / "data", data_dir / "server.log", env)
    try:
        yield process.start()
    finally:
        process.stop()
        print(f"===== iris-serve log\n{process.log()}")


@pytest.fixture
def live(server: ServerProcess) -> Iterator[ServerProcess]:
    """The real server; after the test it must answer /predict as before, with no traceback."""
    with server.client() as http:
        before = http.post("/predict", json={"instances": [ROW, VIRGINICA]})
    assert before.status_code == 200, before.text
    yield server
    with server.client() as http:
        after = http.post("/predict", json={"instances": [ROW, VIRGINICA]})
    assert server.proc is not None
    assert server.proc.poll() is None, "iris-serve has exited"
    assert after.status_code == 200, after.text
    assert after.content == before.content
    log = server.log()
    assert "Traceback" not in log, log
    assert "Exception in ASGI application" not in log, log


def exchange(port: int, request: bytes, seconds: float = 10.0) -> bytes:
    """Send raw bytes on a new connection; everything the server answers until it closes.

    The requests say ``Connection: close`` (or are malformed, which closes the connection too);
    the client does not half-close, as uvicorn takes that for a client gone.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        # the server may answer and close before the whole body is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def request_bytes(path: str, body: bytes, *headers: str, length: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}"] if length else []
    lines += [*headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:300]
    status = int(head.split()[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, json.loads(body) if body else {}


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/predict", nested(DEEP).encode(), 422, "more JSON than"),
        ("/predict", ('{"instances": ' + nested(DEEP) + "}").encode(), 422, "more JSON than"),
        (
            INFER,
            json.dumps(infer_body()).replace("[5.1, 3.5, 1.4, 0.2]", nested(DEEP)).encode(),
            400,
            "more JSON than",
        ),
        (
            "/predict",
            ('{"instances": [' + row_json(sepal_length="1" + "0" * 900_000) + "]}").encode(),
            400,
            "number out of range",
        ),
        (
            "/predict",
            ('{"instances": [' + row_json(sepal_length="1e999999999") + "]}").encode(),
            422,
            "finite",
        ),
        (
            INFER,
            json.dumps(infer_body()).replace("5.1", "1" + "0" * 900_000).encode(),
            400,
            "out of range",
        ),
        ("/predict", b"\xff\xfe\xfd" * 1000, 400, "JSON"),
        ("/predict", b'{"instances": [{"sepal_length": "\xc3\x28"}]}', 400, "JSON"),
        (INFER, b'{"id": "\xed\xa0\x80", "inputs": []}', 400, "JSON"),
    ],
    ids=[
        "deep-array",
        "deep-instances",
        "deep-v2-data",
        "million-digit-integer",
        "huge-exponent",
        "million-digit-v2",
        "not-utf8",
        "invalid-utf8-string",
        "utf8-surrogate-v2",
    ],
)
def test_real_server_refuses_the_nastiest_bodies_and_keeps_serving(
    live: ServerProcess, path: str, body: bytes, status: int, words: str
) -> None:
    started = time.perf_counter()
    got, answer = status_and_body(exchange(live.port, request_bytes(path, body)))
    print(f"{len(body)} bytes to {path}: {got} in {time.perf_counter() - started:.3f} s")
    assert got == status, answer
    assert words in (answer.get("detail") or answer.get("error", "")), answer
    assert time.perf_counter() - started < 5.0  # a bound: refused, never worked through


def chunked_body(body: bytes, size: int = 8192, declared: int | None = None) -> bytes:
    """``body`` in HTTP/1.1 chunked framing (``declared``: one chunk claiming that size)."""
    if declared is not None:
        return f"{declared:x}\r\n".encode() + body
    framed = b""
    for piece in chunks(body, size):
        framed += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return framed + b"0\r\n\r\n"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/predict", INFER])
def test_real_server_answers_413_to_a_chunked_body_over_the_limit(
    live: ServerProcess, path: str
) -> None:
    # just over the limit: the server reads it all before it answers and closes
    body = b'{"instances": [' + b" " * RAW_LIMIT + b"]}"
    request = request_bytes(path, chunked_body(body), "Transfer-Encoding: chunked", length=False)
    status, answer = status_and_body(exchange(live.port, request))
    assert status == 413, answer
    assert "IRIS_MAX_BODY_BYTES" in (answer.get("detail") or answer.get("error", ""))


@pytest.mark.slow
def test_real_server_answers_413_to_one_chunk_claiming_a_petabyte(live: ServerProcess) -> None:
    body = b" " * (RAW_LIMIT + 1)
    request = request_bytes(
        "/predict", chunked_body(body, declared=2**50), "Transfer-Encoding: chunked", length=False
    )
    status, answer = status_and_body(exchange(live.port, request))
    assert status in (400, 413), answer


@pytest.mark.slow
@pytest.mark.parametrize(
    "request_",
    [
        # both framings at once: the classic request-smuggling ambiguity
        request_bytes("/predict", b'5\r\n{"a":\r\n0\r\n\r\n', "Transfer-Encoding: chunked"),
        request_bytes(
            "/predict", b"zz\r\nxx\r\n0\r\n\r\n", "Transfer-Encoding: chunked", length=False
        ),
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 3\r\n\r\n{}",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: "
        + b"a" * 200_000
        + b"\r\n\r\n",
        b"POST /predict\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /models/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    ],
    ids=[
        "content-length-and-chunked",
        "bad-chunk-size",
        "negative-length",
        "list-length",
        "two-lengths",
        "200k-header",
        "nul-in-target",
        "dot-dot-target",
        "tls-hello",
    ],
)
def test_real_server_refuses_malformed_http_and_keeps_serving(
    live: ServerProcess, request_: bytes
) -> None:
    answer = exchange(live.port, request_)
    print(f"answer: {answer[:60]!r}")
    if answer:  # a 4xx, or a closed connection: never a 2xx or a 5xx
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]


@pytest.mark.slow
def test_real_server_answers_a_body_sent_one_byte_at_a_time_while_serving_others(
    live: ServerProcess,
) -> None:
    body = json.dumps({"instances": [ROW, VIRGINICA]}).encode()
    request = request_bytes("/predict", body)
    answers: list[bytes] = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", live.port), timeout=10.0) as sock:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.002)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            answers.append(answer)

    slow = threading.Thread(target=trickle)
    trickle_started = time.perf_counter()
    slow.start()
    slowest = 0.0
    with live.client() as http:
        served = 0
        while slow.is_alive():  # the others are not held up by the slow one
            started = time.perf_counter()
            assert http.post("/predict", json={"instances": [ROW]}).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            served += 1
    slow.join(10.0)
    print(
        f"\n{len(request)} bytes trickled in {time.perf_counter() - trickle_started:.2f} s; "
        f"meanwhile {served} other predictions, the slowest {slowest * 1000:.0f} ms"
    )
    # A server held up by the trickle would answer one or two others before it ends, not five.
    assert served >= 5
    [raw] = answers
    status, answer = status_and_body(raw)
    assert status == 200, answer
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]


@pytest.mark.slow
def test_real_server_refuses_an_endless_header_line_before_buffering_megabytes(
    live: ServerProcess,
) -> None:
    """A header line is bounded like a body: refused early, not kept in memory to the end."""
    sent, piece, total = 0, b"a" * 65536, 8 * 2**20
    answer = b""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10.0) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: ")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total:
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    print(f"header line: {sent} bytes taken before the answer {answer[:40]!r}")
    assert sent < total, f"the server read an {total >> 20} MiB header line to the end"
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
