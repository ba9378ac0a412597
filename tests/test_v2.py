"""The Open Inference Protocol (KServe v2) endpoints: through the ASGI app, and through
tritonclient.http, a client we did not write, against ``iris-serve`` as a real process.

The process tests start the console script on a free port of 127.0.0.1 with a temporary data
directory holding two model versions, and always stop it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from harness.api import app_client, assert_error, instances
from harness.servers import server_pool
from model.data import CLASSES, Dataset, load_iris
from model.persistence import ModelStore
from model.train import Hyperparameters, TrainResult, train

TOKEN = "v2-test-token-0123456789"
IRIS = load_iris()
RAW = IRIS.raw  # (150, 4) centimetres
INFER = "/v2/models/iris/infer"
MAX_INSTANCES = 5000
OUTPUT_NAMES = ["probabilities", "class_index", "label"]


def make_client(data_dir: Path, **overrides: Any) -> TestClient:
    limits = {"max_instances": MAX_INSTANCES, "max_body_bytes": 2**20}
    return app_client(data_dir, **({"api_token": TOKEN} | limits | overrides))


@dataclass(frozen=True)
class Versions:
    old: str  # stored, not active: reachable only by pinning it
    active: str


def store_two_versions(data_dir: Path, trained: TrainResult, iris: Dataset) -> Versions:
    """An older version and a different, active one, written before the server starts."""
    store = ModelStore(data_dir / "models")
    old = store.save(trained.model, {"note": "older"})
    newer = train(iris, Hyperparameters(epochs=30, seed=11))
    return Versions(old=old, active=store.save(newer.model, {"note": "active"}, activate=True))


@pytest.fixture(scope="module")
def versions_dir(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainResult, iris: Dataset
) -> tuple[Path, Versions]:
    data_dir = tmp_path_factory.mktemp("v2-data")
    return data_dir, store_two_versions(data_dir, trained, iris)


@pytest.fixture(scope="module")
def shared(versions_dir: tuple[Path, Versions]) -> Iterator[TestClient]:
    """A client for tests that do not change state."""
    with make_client(versions_dir[0]) as c:
        yield c


@pytest.fixture(scope="module")
def versions(versions_dir: tuple[Path, Versions]) -> Versions:
    return versions_dir[1]


def tensor(raw: Any = RAW, **changes: Any) -> dict[str, Any]:
    array = np.asarray(raw)
    body = {
        "name": "measurements",
        "shape": list(array.shape),
        "datatype": "FP64",
        "data": array.tolist(),
    }
    return body | changes


def without_data(tensor: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in tensor.items() if key != "data"}


def request(raw: Any = RAW, **changes: Any) -> dict[str, Any]:
    return {"inputs": [tensor(raw)]} | changes


def post(client: TestClient, body: Any, path: str = INFER, **headers: str) -> httpx.Response:
    """POST raw bytes with no Content-Type, as tritonclient does (json: integers of any size)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers=headers)


def outputs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in body["outputs"]}


def predict(client: TestClient | httpx.Client, raw: Any, version: str | None = None) -> Any:
    """What the native /predict answers for the same rows: (version, o_s, index, labels)."""
    body: dict[str, Any] = {"instances": instances(np.asarray(raw))}
    if version is not None:
        body["model_version"] = version
    response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    predictions = answer["predictions"]
    o_s = np.array([[p["probabilities"][c] for c in CLASSES] for p in predictions])
    index = np.array([p["class_index"] for p in predictions])
    return answer["model_version"], o_s, index, [p["label"] for p in predictions]


# -- health and metadata ----------------------------------------------------------------------


def test_server_metadata_names_the_server(shared: TestClient) -> None:
    body = shared.get("/v2").json()
    assert body["name"] == "iris-service"
    assert isinstance(body["version"], str)
    assert body["extensions"] == ["binary_tensor_data"]


def test_server_live_and_ready(shared: TestClient) -> None:
    assert shared.get("/v2/health/live").json() == {"live": True}
    ready = shared.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True


def test_model_metadata_describes_the_tensors_and_versions(
    shared: TestClient, versions: Versions
) -> None:
    for path in ("/v2/models/iris", f"/v2/models/iris/versions/{versions.old}"):
        body = shared.get(path).json()
        assert body["name"] == "iris"
        assert body["platform"] == "numpy"
        assert body["versions"] == sorted([versions.old, versions.active])
        assert body["inputs"] == [{"name": "measurements", "datatype": "FP64", "shape": [-1, 4]}]
        assert body["outputs"] == [
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
            {"name": "class_index", "datatype": "INT64", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ]


def test_model_ready_for_the_active_and_a_stored_version(
    shared: TestClient, versions: Versions
) -> None:
    assert shared.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    pinned = shared.get(f"/v2/models/iris/versions/{versions.old}/ready")
    assert pinned.json() == {"name": "iris", "ready": True}


def test_not_ready_is_503_and_a_corrupt_version_409(tmp_path: Path, trained: TrainResult) -> None:
    version = ModelStore(tmp_path / "models").save(trained.model, {}, activate=True)
    (tmp_path / "models" / version / "weights.npz").write_bytes(b"not an npz")
    with make_client(tmp_path) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2").status_code == 200
        assert client.get("/v2/models/iris").status_code == 200  # the signature is static
        assert_error(client.get("/v2/health/ready"), 503, "not ready")
        assert_error(client.get("/v2/models/iris/ready"), 503, "no version that was active before")
        assert_error(post(client, request()), 503)
        pinned = f"/v2/models/iris/versions/{version}"
        assert_error(client.get(f"{pinned}/ready"), 409, "sha256")
        assert_error(post(client, request(), f"{pinned}/infer"), 409)


# -- inference ------------------------------------------------------------------------------


def test_infer_equals_predict_for_the_150_iris_rows(shared: TestClient, versions: Versions) -> None:
    response = post(shared, request(id="all-150"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    version, o_s, index, labels = predict(shared, RAW)
    assert body["model_name"] == "iris"
    assert body["model_version"] == version == versions.active
    assert body["id"] == "all-150"
    got = outputs(body)
    assert list(got) == OUTPUT_NAMES
    assert got["probabilities"]["datatype"] == "FP64"
    assert got["probabilities"]["shape"] == [150, 3]
    assert len(got["probabilities"]["data"]) == 450  # flat, row-major
    assert np.array_equal(np.reshape(got["probabilities"]["data"], (150, 3)), o_s)
    assert got["class_index"] == {
        "name": "class_index",
        "datatype": "INT64",
        "shape": [150],
        "data": index.tolist(),
    }
    assert got["label"] == {"name": "label", "datatype": "BYTES", "shape": [150], "data": labels}
    assert np.mean(index == IRIS.y) > 0.9


def test_one_row_infer_equals_one_row_predict_and_the_model_core(
    shared: TestClient, versions: Versions
) -> None:
    """One row takes the one-row path in both front ends (flat or nested data): the same
    bits as each other and as ``predict_proba`` on that row."""
    from model.network import predict_proba

    model = shared.app.state.iris.registry.get(versions.active).model  # type: ignore[attr-defined]
    for row in RAW[::15]:
        expected = predict_proba(model, row[None, :])
        _, o_s, index, labels = predict(shared, row[None, :])
        assert np.array_equal(o_s, expected)
        for data in (row[None, :].tolist(), row.tolist()):
            response = post(shared, {"inputs": [tensor(row[None, :], data=data)]})
            got = outputs(response.json())
            assert np.array_equal(np.reshape(got["probabilities"]["data"], (1, 3)), expected)
            assert got["class_index"]["data"] == index.tolist()
            assert got["label"]["data"] == labels


def test_flat_and_nested_data_give_the_same_answer(shared: TestClient) -> None:
    nested = post(shared, request(RAW[:5]))
    flat = post(shared, {"inputs": [tensor(RAW[:5], data=RAW[:5].ravel().tolist())]})
    assert nested.status_code == flat.status_code == 200
    assert nested.json() == flat.json()


def test_fp32_and_integer_data_are_accepted(shared: TestClient) -> None:
    rows32 = RAW[:10].astype(np.float32)
    response = post(shared, {"inputs": [tensor(rows32, datatype="FP32")]})
    assert response.status_code == 200, response.text
    _, o_s, _, _ = predict(shared, rows32.astype(np.float64))
    got = np.reshape(outputs(response.json())["probabilities"]["data"], (10, 3))
    assert np.array_equal(got, o_s)
    assert post(shared, request([[5, 3, 1, 1]])).status_code == 200


def test_version_pinned_infer_uses_that_version(shared: TestClient, versions: Versions) -> None:
    path = f"/v2/models/iris/versions/{versions.old}/infer"
    body = post(shared, request(), path).json()
    version, o_s, _, _ = predict(shared, RAW, versions.old)
    assert body["model_version"] == version == versions.old
    got = np.reshape(outputs(body)["probabilities"]["data"], (150, 3))
    assert np.array_equal(got, o_s)
    _, active, _, _ = predict(shared, RAW)
    assert not np.array_equal(got, active)


def test_requested_outputs_are_answered_in_the_order_asked(shared: TestClient) -> None:
    body = request(
        RAW[:3],
        outputs=[{"name": "label"}, {"name": "class_index", "parameters": {"binary_data": False}}],
    )
    answer = post(shared, body).json()
    assert [o["name"] for o in answer["outputs"]] == ["label", "class_index"]
    assert "id" not in answer  # echoed only when given
    assert post(shared, request(RAW[:3], outputs=[])).json()["outputs"][0]["name"] == (
        "probabilities"
    )


def test_parameters_are_accepted_at_every_level(shared: TestClient) -> None:
    body = {
        "id": "p",
        "parameters": {"binary_data_output": True, "priority": 1, "tag": "x"},
        "inputs": [tensor(RAW[:2], parameters={"note": "ok"})],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    response = post(shared, body)
    assert response.status_code == 200, response.text
    # the one output asked for in binary comes after the JSON, its size in the JSON
    head = int(response.headers["inference-header-content-length"])
    output = orjson.loads(response.content[:head])["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 2 * 3 * 8}
    assert "data" not in output
    assert len(response.content) == head + 2 * 3 * 8


def test_any_content_type_is_parsed_as_json(shared: TestClient) -> None:
    for media in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
        assert post(shared, request(RAW[:1]), **{"Content-Type": media}).status_code == 200


def test_large_requests_are_answered(shared: TestClient) -> None:
    raw = np.tile(RAW, (20, 1))  # 3000 rows, computed off the event loop
    body = post(shared, request(raw)).json()
    assert outputs(body)["class_index"]["shape"] == [3000]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_bodies_are_inflated(shared: TestClient, coding: str) -> None:
    raw = orjson.dumps(request(RAW[:4]))
    packed = gzip.compress(raw) if coding == "gzip" else zlib.compress(raw)
    response = post(shared, packed, **{"Content-Encoding": coding})
    assert response.status_code == 200, response.text
    assert response.json() == post(shared, raw).json()


def test_bad_compressed_bodies_are_refused(shared: TestClient) -> None:
    raw = orjson.dumps(request(RAW[:4]))
    assert_error(post(shared, raw, **{"Content-Encoding": "gzip"}), 400, "not valid gzip")
    truncated = gzip.compress(raw)[:-12]
    assert_error(post(shared, truncated, **{"Content-Encoding": "gzip"}), 400, "truncated")
    response = post(shared, raw, **{"Content-Encoding": "br"})
    assert_error(response, 415, "'br'", "gzip")
    assert response.headers["accept-encoding"] == "gzip, deflate"
    bomb = gzip.compress(b" " * (2**20 + 1))
    assert_error(post(shared, bomb, **{"Content-Encoding": "gzip"}), 413, "IRIS_MAX_BODY_BYTES")


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("split", [True, False], ids=["two members", "trailing garbage"])
def test_bytes_after_the_compressed_body_are_refused_naming_how_many(
    shared: TestClient, coding: str, split: bool
) -> None:
    raw = orjson.dumps(request(RAW[:4]))
    pack = gzip.compress if coding == "gzip" else zlib.compress
    unit = "gzip member" if coding == "gzip" else "zlib stream"
    # Split inside the JSON, the first member alone is not a request; both together would be.
    first, after = (pack(raw[:25]), pack(raw[25:])) if split else (pack(raw), b"\0junk")
    version = shared.get("/readyz").json()["model_version"]
    for path in (INFER, f"/v2/models/iris/versions/{version}/infer"):
        response = post(shared, first + after, path, **{"Content-Encoding": coding})
        words = (f"Content-Encoding {coding}", f"one {unit}", f"{len(after)} bytes follow")
        assert_error(response, 400, *words)
        assert post(shared, pack(raw), path, **{"Content-Encoding": coding}).status_code == 200


# -- bad requests: 400 naming the problem -------------------------------------------------------

NEGATIVE = [[5.1, 3.5, -1.4, 0.2]]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        # datatypes are case-sensitive, and only FP64 or FP32 carries measurements
        ({"inputs": [tensor(RAW[:2], datatype="fp64")]}, ["'fp64'", "case-sensitive", "'FP64'"]),
        ({"inputs": [tensor(RAW[:2], datatype="INT64")]}, ["'INT64'", "FP64 or FP32"]),
        ({"inputs": [tensor(RAW[:2], datatype="FLOAT")]}, ["not a protocol datatype"]),
        # shape, datatype and data that disagree
        ({"inputs": [tensor(RAW[:2], data=RAW[:2].ravel().tolist()[:7])]}, ["8 values", "has 7"]),
        ({"inputs": [tensor(RAW[:2], shape=[3, 4])]}, ["12 values", "has 8"]),
        ({"inputs": [tensor(RAW[:2], data=RAW[:2].reshape(4, 2).tolist())]}, ["nested as [4, 2]"]),
        ({"inputs": [tensor(RAW[:2], data=[RAW[:2].tolist()])]}, ["nested as [1, 2, 4]"]),
        ({"inputs": [tensor(RAW[:2], shape=[8])]}, ["inputs[0].shape", "[n, 4]"]),
        ({"inputs": [tensor(RAW[:2], shape=[2, 4, 1])]}, ["[n, 4]"]),
        ({"inputs": [tensor(RAW[:2], shape=[2, 2])]}, ["[n, 4]"]),
        ({"inputs": [tensor(RAW[:0].reshape(0, 4))]}, ["no rows"]),
        ({"inputs": [tensor(RAW[:1], shape=[-1, 4])]}, ["negative"]),
        ({"inputs": [tensor(RAW[:1], shape=[1.5, 4])]}, ["inputs[0].shape[0]", "integer"]),
        ({"inputs": [tensor(RAW[:1], shape=[True, 4])]}, ["inputs[0].shape[0]", "got `bool`"]),
        ({"inputs": [tensor(RAW[:1], shape="1,4")]}, ["inputs[0].shape"]),
        ({"inputs": [tensor(RAW[:1], data=None)]}, ["no 'data'"]),
        ({"inputs": [tensor(RAW[:1], data=5.1)]}, ["inputs[0].data"]),
        ({"inputs": [tensor(RAW[:9], data=5.1)]}, ["inputs[0].data"]),  # many rows: simdjson's
        ({"inputs": [tensor(RAW[:9], data={"a": 1})]}, ["inputs[0].data"]),
        ({"inputs": [tensor(RAW[:1], data=[5.1] * 4000)]}, ["holds 4 values", "more than"]),
        ({"inputs": [tensor(RAW[:9], data=[[]] * 36)]}, ["holds 36 values"]),
        # a shape that overflows, and one over the row limit
        ({"inputs": [tensor(RAW[:1], shape=[2**62, 2**62])]}, ["overflows"]),
        ({"inputs": [tensor(RAW[:1], shape=[2**64, 4])]}, ["overflows", "2**64 - 1"]),
        ({"inputs": [tensor(RAW[:1], shape=[2**62, 4])]}, ["overflows"]),
        ({"inputs": [tensor(RAW[:1], shape=[2**40, 4])]}, ["IRIS_MAX_INSTANCES"]),
        ({"inputs": [tensor(np.tile(RAW, (34, 1)))]}, ["5100 rows", "5000"]),
        # ragged data, and data that are not numbers
        ({"inputs": [tensor(RAW[:2], data=[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2]])]}, ["ragged"]),
        ({"inputs": [tensor(RAW[:1], data=[[5.1, 3.5], 1.4, 0.2])]}, ["ragged", "mixes"]),
        ({"inputs": [tensor(RAW[:1], data=[[5.1, True, 1.4, 0.2]])]}, ["data[0][1]", "True"]),
        ({"inputs": [tensor(RAW[:1], data=[5.1, 3.5, "1.4", 0.2])]}, ["data[2]", "'1.4'"]),
        ({"inputs": [tensor(RAW[:1], data=[[5.1, 3.5, 1.4, None]])]}, ["data[0][3]", "None"]),
        ({"inputs": [tensor(RAW[:1], data=[[5.1, 3.5, 1.4, {}]])]}, ["not a number"]),
        ({"inputs": [tensor(RAW[:1], data=[[5.1, 3.5, 1.4, 10**400]])]}, ["too large for FP64"]),
        # the native measurement rules: above 0 and at most 100 cm
        ({"inputs": [tensor(NEGATIVE)]}, ["row 0", "petal_length", "-1.4", "(0, 100]"]),
        ({"inputs": [tensor([[0, 1, 1, 1]])]}, ["sepal_length", "0.0 cm"]),
        ({"inputs": [tensor(RAW[:3], data=[*RAW[:2].tolist(), [1, 1, 1, 100.5]])]}, ["row 2"]),
        # inputs: a wrong name, duplicates, none
        ({"inputs": [tensor(RAW[:1], name="input0")]}, ["unknown input 'input0'", "measurements"]),
        ({"inputs": [tensor(RAW[:1]), tensor(RAW[:1])]}, ["'measurements'", "more than once"]),
        ({"inputs": [tensor(RAW[:1]), tensor(RAW[:1], name="x")]}, ["unknown input 'x'"]),
        ({"inputs": []}, ["inputs", "length >= 1"]),
        ({"id": "no-inputs"}, ["inputs", "required"]),
        # outputs: unknown and repeated names
        (request(RAW[:1], outputs=[{"name": "logits"}]), ["unknown output 'logits'", "label"]),
        (request(RAW[:1], outputs=[{"name": "label"}] * 2), ["'label'", "more than once"]),
        (request(RAW[:1], outputs=[{}]), ["outputs[0].name"]),
        # the envelope
        (request(RAW[:1], id=7), ["id"]),
        (request(RAW[:1], parameters=[1]), ["parameters"]),
        (request(RAW[:1], input=[]), ["input", "not a field"]),
        ({"inputs": [tensor(RAW[:1], dims=[1, 4])]}, ["inputs[0].dims"]),
        ([request(RAW[:1])], ["body", "object"]),
        ("inputs", ["body", "object"]),
        # binary data declared without the extension's header
        (
            {"inputs": [tensor(RAW[:1], parameters={"binary_data_size": 32})]},
            ["both ways"],
        ),
        (
            {"inputs": [without_data(tensor(RAW[:1], parameters={"binary_data_size": 32}))]},
            ["binary_data_size", "Inference-Header-Content-Length"],
        ),
        ({"inputs": [without_data(tensor(RAW[:1]))]}, ["has no data"]),
        (request(RAW[:1], parameters={"binary_data_output": 1}), ["binary_data_output", "true"]),
        # extensions this server does not implement
        (
            {"inputs": [tensor(RAW[:1], parameters={"shared_memory_region": "r"})]},
            ["shared-memory"],
        ),
        (
            request(RAW[:1], outputs=[{"name": "label", "parameters": {"classification": 2}}]),
            ["classification extension"],
        ),
    ],
)
def test_bad_requests_are_400_naming_the_problem(
    shared: TestClient, body: Any, words: list[str]
) -> None:
    assert_error(post(shared, body), 400, *words)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", ["not valid JSON", "empty"]),
        (b"{", ["not valid JSON"]),
        (b"inputs=1", ["not valid JSON"]),
        (b"\xff\xfe{}", ["not valid JSON"]),
        (b'{"id": "\xff", "inputs": []}', ["not valid JSON"]),
        (b'{"inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP64", '
         b'"data": [5.1, NaN, 1.4, 0.2]}]}', ["not valid JSON", "NaN, 1.4"]),
        (b'{"inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP64", '
         b'"data": [5.1, 3.5, Infinity, 0.2]}]}', ["not valid JSON", "Infinity"]),
        (b'{"inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP64", '
         b'"data": [5.1, 3.5, 1.4, -1e400]}]}', ["inputs[0].data[3]", "out of range"]),
    ],
)  # fmt: skip
def test_bodies_that_are_not_json_or_not_finite_are_400(
    shared: TestClient, raw: bytes, words: list[str]
) -> None:
    assert_error(post(shared, raw), 400, *words)


# -- the binary tensor data extension -----------------------------------------------------------

HEADER = "Inference-Header-Content-Length"


def binary_request(
    raw: Any = RAW, datatype: str = "FP64", outputs: list[dict[str, Any]] | None = None, **top: Any
) -> tuple[bytes, dict[str, str]]:
    """A request in the extension's form, built here byte by byte (not by the server's code):
    the JSON, then the input's little-endian bytes; the header giving the JSON's length."""
    data = np.asarray(raw, dtype="<f8" if datatype == "FP64" else "<f4").tobytes()
    shape = list(np.asarray(raw).shape)
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "measurements",
                "shape": shape,
                "datatype": datatype,
                "parameters": {"binary_data_size": len(data)},
            }
        ]
    }
    if outputs is not None:
        header["outputs"] = outputs
    header |= top
    head = json.dumps(header).encode()
    return head + data, {HEADER: str(len(head))}


def read_binary_answer(response: httpx.Response) -> dict[str, Any]:
    """Each output's values, reading the binary ones by their binary_data_size, in order."""
    assert response.status_code == 200, response.text
    head = int(response.headers[HEADER])
    answer = orjson.loads(response.content[:head])
    rest = response.content[head:]
    values: dict[str, Any] = {}
    for output in answer["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values[output["name"]] = output["data"]
            continue
        blob, rest = rest[:size], rest[size:]
        if output["datatype"] == "FP64":
            values[output["name"]] = np.frombuffer(blob, "<f8").reshape(output["shape"])
        elif output["datatype"] == "INT64":
            values[output["name"]] = np.frombuffer(blob, "<i8")
        else:  # BYTES: a 4-byte little-endian length, then the bytes, each element
            labels = []
            while blob:
                length = int.from_bytes(blob[:4], "little")
                labels.append(blob[4 : 4 + length].decode())
                blob = blob[4 + length :]
            values[output["name"]] = labels
    assert rest == b""  # nothing after the declared outputs
    return values


@pytest.mark.parametrize("rows", [1, 150])
def test_binary_fp64_in_and_out_equals_predict_bit_for_bit(shared: TestClient, rows: int) -> None:
    body, headers = binary_request(RAW[:rows], parameters={"binary_data_output": True})
    response = post(shared, body, **headers)
    assert response.headers["content-type"] == "application/octet-stream"
    values = read_binary_answer(response)
    _, o_s, index, labels = predict(shared, RAW[:rows])
    assert np.array_equal(values["probabilities"], o_s)
    assert values["class_index"].tolist() == index.tolist()
    assert values["label"] == labels


def test_binary_fp32_is_read_as_its_float32_values(shared: TestClient) -> None:
    as_fp32 = RAW.astype(np.float32)
    body, headers = binary_request(as_fp32, "FP32")
    values = post(shared, body, **headers).json()  # outputs in JSON: none asked in binary
    got = {o["name"]: o["data"] for o in values["outputs"]}
    _, o_s, _, labels = predict(shared, as_fp32.astype(np.float64))
    assert np.array_equal(np.array(got["probabilities"]).reshape(-1, 3), o_s)
    assert got["label"] == labels


def test_binary_outputs_follow_each_outputs_own_choice_over_the_requests(
    shared: TestClient,
) -> None:
    asked = [
        {"name": "label", "parameters": {"binary_data": False}},
        {"name": "probabilities"},
        {"name": "class_index", "parameters": {"binary_data": True}},
    ]
    body, headers = binary_request(RAW[:5], outputs=asked, parameters={"binary_data_output": True})
    response = post(shared, body, **headers)
    head = orjson.loads(response.content[: int(response.headers[HEADER])])
    kinds = [("data" in o, o.get("parameters")) for o in head["outputs"]]
    assert kinds == [
        (True, None),
        (False, {"binary_data_size": 120}),
        (False, {"binary_data_size": 40}),
    ]
    assert read_binary_answer(response)["label"] == predict(shared, RAW[:5])[3]


def test_json_inputs_may_ask_for_binary_outputs(shared: TestClient) -> None:
    response = post(
        shared, request(RAW[:3], outputs=[{"name": "label", "parameters": {"binary_data": True}}])
    )
    assert read_binary_answer(response)["label"] == predict(shared, RAW[:3])[3]


def binary_case(raw: Any = RAW[:2], datatype: str = "FP64", *, size: int | None = None,
                extra: bytes = b"", header: str | None = None,
                data: Any = None) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """A binary request with one thing wrong: the declared size, trailing bytes, the header,
    or JSON data besides."""
    body, headers = binary_request(raw, datatype)
    head = int(headers[HEADER])
    request_json = json.loads(body[:head])
    if size is not None:
        request_json["inputs"][0]["parameters"]["binary_data_size"] = size
    if data is not None:
        request_json["inputs"][0]["data"] = data
    new_head = json.dumps(request_json).encode()
    return new_head + body[head:] + extra, {HEADER: header or str(len(new_head))}


@pytest.mark.parametrize(
    ("case", "words"),
    [
        (binary_case(size=60), ["not a multiple of FP64's 8 bytes"]),
        (binary_case(size=56), ["shape [2, 4] of FP64 is 64 bytes", "binary_data_size is 56"]),
        (binary_case(extra=b"\0" * 8), ["72 bytes follow the JSON", "declare 64"]),
        (binary_case(RAW[:2].astype(np.float32), "FP32", size=64), ["of FP32 is 32 bytes"]),
        (binary_case(header="99999"), ["Inference-Header-Content-Length 99999", "past the end"]),
        (binary_case(header="-1"), ["not a byte count"]),
        (binary_case(header="12abc"), ["not a byte count"]),
        (binary_case(header="1" * 5000), ["not a byte count"]),  # int() refuses 4,300+ digits
        (binary_case(data=[[1, 2, 3, 4]] * 2), ["both ways"]),
        (binary_case(size=-8), ["binary_data_size is -8", "not a byte count"]),
        (binary_case(np.array([[5.1, 3.5, np.nan, 0.2]])), ["row 0, petal_length", "not finite"]),
        (binary_case(np.array([[5.1, 3.5, 1.4, 0.2], [5.1, -3.0, 1.4, 0.2]])),
         ["row 1, sepal_width", "outside (0, 100]"]),
    ],
)  # fmt: skip
def test_binary_malformations_are_400_naming_them(
    shared: TestClient, case: tuple[bytes, dict[str, str]], words: list[str]
) -> None:
    body, headers = case
    assert_error(post(shared, body, **headers), 400, *words)


def test_binary_with_an_unknown_datatype_is_refused_before_its_bytes(shared: TestClient) -> None:
    body, headers = binary_request(RAW[:2].astype(np.float64))
    head = int(headers[HEADER])
    changed = body[:head].replace(b'"FP64"', b'"INT64"')
    response = post(shared, changed + body[head:], **{HEADER: str(len(changed))})
    assert_error(response, 400, "datatype 'INT64' takes FP64 or FP32")


def test_binary_bytes_without_a_declared_input_are_refused(shared: TestClient) -> None:
    head = orjson.dumps(request(RAW[:1]))
    response = post(shared, head + b"\0" * 32, **{HEADER: str(len(head))})
    assert_error(response, 400, "32 bytes follow the JSON", "binary_data_size")


def test_binary_request_compressed_whole_is_inflated_then_split(shared: TestClient) -> None:
    body, headers = binary_request(RAW[:4], parameters={"binary_data_output": True})
    response = post(shared, gzip.compress(body), **headers, **{"Content-Encoding": "gzip"})
    assert np.array_equal(
        read_binary_answer(response)["probabilities"], predict(shared, RAW[:4])[1]
    )


# -- unknown models, versions and paths ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/IRIS",
        "/v2/models/iris/versions/20200101T000000.000000Z-00000000",
        "/v2/models/iris/versions/20200101T000000.000000Z-00000000/ready",
        "/v2/models/iris/versions/1",
        "/v2/models/iris/versions/..%2F..%2Fapi_token/ready",
        "/v2/models/iris/versions/CURRENT",
    ],
)
def test_unknown_models_and_versions_are_404(shared: TestClient, path: str) -> None:
    assert_error(shared.get(path), 404)


def test_infer_on_an_unknown_model_or_version_is_404(shared: TestClient) -> None:
    assert_error(post(shared, request(), "/v2/models/resnet/infer"), 404, "'resnet'", "'iris'")
    absent = "/v2/models/iris/versions/20200101T000000.000000Z-00000000/infer"
    assert_error(post(shared, request(), absent), 404, "no stored model version")
    assert_error(post(shared, request(), "/v2/models/iris/versions/v1/infer"), 404, "'v1'")


def test_unknown_paths_and_methods_under_v2_are_errors_not_problems(shared: TestClient) -> None:
    assert_error(shared.get("/v2/models/iris/stats"), 404, "/v2/models/iris/stats")
    assert_error(shared.get("/v2/repository/index"), 404)
    response = shared.get(INFER)
    assert_error(response, 405, "GET")
    assert response.headers["allow"] == "POST"
    assert_error(shared.post("/v2"), 405, "POST")
    assert_error(shared.delete("/v2/health/live"), 405)


def test_openapi_lists_the_v2_endpoints(shared: TestClient) -> None:
    paths = shared.get("/openapi.json").json()["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model_name}",
        "/v2/models/{model_name}/versions/{model_version}",
        "/v2/models/{model_name}/ready",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
    ):
        assert path in paths, path
    assert "/v2/{path}" not in paths
    assert "400" in paths["/v2/models/{model_name}/infer"]["post"]["responses"]


# -- tritonclient against iris-serve as a real process ------------------------------------------


@dataclass(frozen=True)
class Server:
    port: int
    versions: Versions

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainResult, iris: Dataset
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("v2-server")
    versions = store_two_versions(data_dir, trained, iris)
    with server_pool(tmp_path_factory.mktemp("v2-server-logs")) as start:
        yield Server(start(data_dir, {"IRIS_API_TOKEN": TOKEN}).port, versions)


@pytest.fixture
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(url=server.address) as c:
        yield c


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.address}", timeout=10.0) as c:
        yield c


def json_inputs(raw: Any) -> list[triton.InferInput]:
    measurements = triton.InferInput("measurements", list(raw.shape), "FP64")
    measurements.set_data_from_numpy(raw, binary_data=False)
    return [measurements]


def json_outputs() -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=False) for name in OUTPUT_NAMES]


@pytest.mark.slow
def test_tritonclient_sees_the_server_live_ready_and_described(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"] == "iris-service"


@pytest.mark.slow
def test_tritonclient_model_ready_and_metadata(
    client: triton.InferenceServerClient, server: Server
) -> None:
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", server.versions.old)
    assert not client.is_model_ready("resnet")
    metadata = client.get_model_metadata("iris")
    assert metadata["name"] == "iris"
    assert metadata["versions"] == sorted([server.versions.old, server.versions.active])
    assert metadata["inputs"] == [{"name": "measurements", "datatype": "FP64", "shape": [-1, 4]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("probabilities", "FP64", [-1, 3]),
        ("class_index", "INT64", [-1]),
        ("label", "BYTES", [-1]),
    ]


@pytest.mark.slow
def test_tritonclient_infer_on_the_150_iris_rows_equals_predict(
    client: triton.InferenceServerClient, http: httpx.Client, server: Server
) -> None:
    result = client.infer("iris", json_inputs(RAW), outputs=json_outputs(), request_id="iris-150")
    response = result.get_response()
    version, o_s, index, labels = predict(http, RAW)
    assert response["id"] == "iris-150"
    assert response["model_version"] == version == server.versions.active
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float64
    assert probabilities.shape == (150, 3)
    assert np.array_equal(probabilities, o_s)
    assert np.array_equal(result.as_numpy("class_index"), index)
    assert result.as_numpy("label").tolist() == labels


@pytest.mark.slow
def test_tritonclient_version_pinned_infer(
    client: triton.InferenceServerClient, http: httpx.Client, server: Server
) -> None:
    old = server.versions.old
    result = client.infer("iris", json_inputs(RAW), model_version=old, outputs=json_outputs())
    version, o_s, index, _ = predict(http, RAW, old)
    assert result.get_response()["model_version"] == version == old
    assert np.array_equal(result.as_numpy("probabilities"), o_s)
    assert np.array_equal(result.as_numpy("class_index"), index)


@pytest.mark.slow
def test_tritonclient_defaults_and_compression_work(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    # No outputs named: the client asks for binary outputs (binary_data_output), compressed.
    rows = RAW[::10]
    result = client.infer("iris", json_inputs(rows), request_compression_algorithm="gzip")
    _, o_s, _, labels = predict(http, rows)
    assert np.array_equal(result.as_numpy("probabilities"), o_s)
    assert [label.decode() for label in result.as_numpy("label")] == labels


@pytest.mark.slow
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_tritonclient_at_its_defaults_binary_in_and_out_equals_predict(
    client: triton.InferenceServerClient, http: httpx.Client, datatype: str
) -> None:
    rows = RAW if datatype == "FP64" else RAW.astype(np.float32)
    measurements = triton.InferInput("measurements", list(rows.shape), datatype)
    measurements.set_data_from_numpy(rows)  # binary_data=True: the client's default
    asked = [triton.InferRequestedOutput(name) for name in OUTPUT_NAMES]  # binary by default
    for outputs in (asked, None):  # named, or none named (binary_data_output)
        result = client.infer("iris", [measurements], outputs=outputs)
        assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
        _, o_s, index, labels = predict(http, rows.astype(np.float64))
        assert np.array_equal(result.as_numpy("probabilities"), o_s)  # bit for bit
        assert result.as_numpy("class_index").tolist() == index.tolist()
        assert [label.decode() for label in result.as_numpy("label")] == labels


@pytest.mark.slow
def test_tritonclient_reads_the_servers_errors(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("resnet", json_inputs(RAW[:1]))
    assert unknown.value.status() == "404"
    assert "'resnet'" in unknown.value.message()

    bad = triton.InferInput("measurements", [1, 4], "FP64")
    bad.set_data_from_numpy(np.array([[5.1, 3.5, -1.4, 0.2]]))  # binary_data=True by default
    with pytest.raises(InferenceServerException) as refused:
        client.infer("iris", [bad])
    assert refused.value.status() == "400"
    assert "row 0, petal_length" in refused.value.message()

    wrong = triton.InferInput("measurements", [1, 4], "INT64")
    wrong.set_data_from_numpy(np.ones((1, 4), dtype=np.int64), binary_data=False)
    with pytest.raises(InferenceServerException) as datatype:
        client.infer("iris", [wrong])
    assert datatype.value.status() == "400"
    assert "FP64 or FP32" in datatype.value.message()


def test_body_over_the_limit_is_a_protocol_error(shared: TestClient) -> None:
    limit = shared.app.state.iris.settings.max_body_bytes  # type: ignore[attr-defined]
    body = b'{"inputs": [' + b" " * limit + b"]}"
    assert_error(post(shared, body), 413, "IRIS_MAX_BODY_BYTES")


def test_a_pinned_version_is_served_through_the_fast_path(shared: TestClient) -> None:
    version = shared.get("/v2/models/iris").json()["versions"][-1]
    body = {
        "inputs": [
            {
                "name": "measurements",
                "shape": [1, 4],
                "datatype": "FP64",
                "data": [5.1, 3.5, 1.4, 0.2],
            }
        ]
    }
    pinned = shared.post(f"/v2/models/iris/versions/{version}/infer", json=body)
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["model_version"] == version
    unknown = shared.post(
        "/v2/models/iris/versions/20200101T000000.000000Z-00000000/infer", json=body
    )
    assert_error(unknown, 404)
