"""The Open Inference Protocol over gRPC, through clients we did not write: tritonclient.grpc
at its defaults, the plain generated stub tritonclient ships, grpcio-health-checking's and
grpcio-reflection's stubs, against ``iris-serve`` as a real process with IRIS_GRPC_PORT set.

This module never imports service.rpc: its generated messages have the protocol's names, as
tritonclient's do, and one process cannot hold both. What the service's .proto says is read
from the .proto itself (compiled to a descriptor set) and held against tritonclient's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from harness import h2load
from harness.models import random_model
from harness.programs import require
from harness.servers import ServerProcess, free_port, server_pool, wait_for
from model.data import CLASSES, FEATURES, load_iris
from model.persistence import ModelStore
from model.train import TrainResult

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "service" / "rpc" / "inference.proto"
RAW = load_iris().raw
MAX_BODY = 2**20
OUTPUTS = ("probabilities", "class_index", "label")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with server_pool(tmp_path_factory.mktemp("grpc")) as start:
        env = {"IRIS_GRPC_PORT": str(free_port()), "IRIS_MAX_BODY_BYTES": str(MAX_BODY)}
        yield start(None, env)


def grpc_address(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.extra_env['IRIS_GRPC_PORT']}"


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(grpc_address(server)) as c:
        yield c


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(grpc_address(server)) as c:
        yield c


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def predicted(http: httpx.Client, rows: np.ndarray) -> tuple[np.ndarray, list[int], list[str]]:
    """What /predict answers for the same rows: probabilities, class indices, labels."""
    instances = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]
    answer = http.post("/predict", json={"instances": instances}).json()["predictions"]
    o_s = np.array([[p["probabilities"][c] for c in CLASSES] for p in answer])
    return o_s, [p["class_index"] for p in answer], [p["label"] for p in answer]


# -- the .proto against tritonclient's ---------------------------------------------------------


def compiled(proto: Path, out: Path) -> descriptor_pb2.FileDescriptorProto:
    """The service's .proto as protoc reads it (nothing imported, nothing registered)."""
    target = out / "set.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}",
         f"--descriptor_set_out={target}", proto.name],
        check=True,
    )  # fmt: skip
    found = descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())
    (file,) = found.file
    return file


def fields(message: descriptor_pb2.DescriptorProto, prefix: str = "") -> dict[str, Any]:
    """Every field of a message and of the messages it nests, by dotted name."""
    found: dict[str, Any] = {}
    for field in message.field:
        found[f"{prefix}{message.name}.{field.name}"] = (
            field.number, field.type, field.label, field.type_name.rsplit(".", 1)[-1],
            field.HasField("oneof_index"),
        )  # fmt: skip
    for nested in message.nested_type:
        found |= fields(nested, f"{prefix}{message.name}.")
    return found


def test_every_message_and_call_is_the_protocols_field_for_field(tmp_path: Path) -> None:
    ours = compiled(PROTO, tmp_path)
    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "inference"
    their_messages = {m.name: m for m in theirs.message_type}
    for message in ours.message_type:
        assert fields(message) == fields(their_messages[message.name]), message.name
    (service,) = ours.service
    their_service = next(s for s in theirs.service if s.name == service.name)
    their_methods = {m.name: (m.input_type, m.output_type) for m in their_service.method}
    for method in service.method:
        assert their_methods[method.name] == (method.input_type, method.output_type)
    assert {m.name for m in service.method} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"
    }  # fmt: skip


def test_the_generated_modules_are_those_of_the_proto(tmp_path: Path) -> None:
    """make proto's output is what is committed: nobody edited the generated code by hand."""
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--pyi_out={tmp_path}",
         "service/rpc/inference.proto"],
        check=True, cwd=ROOT,
    )  # fmt: skip
    for name in ("inference_pb2.py", "inference_pb2_grpc.py", "inference_pb2.pyi"):
        fresh = (tmp_path / "service" / "rpc" / name).read_text()
        assert fresh == (ROOT / "service" / "rpc" / name).read_text(), name
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", "iris_client/oip.proto"],
        check=True, cwd=ROOT / "client",
    )  # fmt: skip
    for name in ("oip_pb2.py", "oip_pb2.pyi"):
        fresh = (tmp_path / "iris_client" / name).read_text()
        assert fresh == (ROOT / "client" / "iris_client" / name).read_text(), name


# -- tritonclient.grpc at its defaults ----------------------------------------------------


@pytest.mark.slow
def test_tritonclient_sees_the_server_live_ready_and_described(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    metadata = client.get_server_metadata()
    assert metadata.name == "iris-service"
    assert list(metadata.extensions) == ["binary_tensor_data"]
    model = client.get_model_metadata("iris")
    assert model.platform == "numpy"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("measurements", "FP64", [-1, 4])
    ]
    assert [t.name for t in model.outputs] == list(OUTPUTS)
    assert len(model.versions) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_tritonclient_at_its_defaults_equals_predict_bit_for_bit(
    client: triton.InferenceServerClient, http: httpx.Client, datatype: str
) -> None:
    rows = RAW if datatype == "FP64" else RAW.astype(np.float32)
    measurements = triton.InferInput("measurements", list(rows.shape), datatype)
    measurements.set_data_from_numpy(rows)  # raw_input_contents: the client's way
    result = client.infer("iris", [measurements], request_id="7")
    o_s, index, labels = predicted(http, rows.astype(np.float64))
    assert np.array_equal(result.as_numpy("probabilities"), o_s)
    assert result.as_numpy("class_index").tolist() == index
    assert [label.decode() for label in result.as_numpy("label")] == labels
    answer = result.get_response()
    assert answer.id == "7"
    assert len(answer.raw_output_contents) == 3  # raw in, raw out


@pytest.mark.slow
def test_a_pinned_version_answers_as_predict_pins_it(
    client: triton.InferenceServerClient, http: httpx.Client
) -> None:
    version = http.get("/models").json()["current"]
    measurements = triton.InferInput("measurements", [2, 4], "FP64")
    measurements.set_data_from_numpy(RAW[:2])
    result = client.infer("iris", [measurements], model_version=version)
    assert result.get_response().model_version == version
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("iris", [measurements], model_version="20000101T000000.000000Z-00000000")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


@pytest.mark.slow
def test_typed_contents_through_the_plain_generated_stub(
    channel: grpc.Channel, http: httpx.Client
) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name="iris", id="typed")
    tensor = request.inputs.add(name="measurements", datatype="FP64", shape=[3, 4])
    tensor.contents.fp64_contents.extend(RAW[:3].ravel().tolist())
    request.outputs.add(name="label")
    request.outputs.add(name="probabilities")
    answer = stub.ModelInfer(request)
    o_s, _, labels = predicted(http, RAW[:3])
    assert [o.name for o in answer.outputs] == ["label", "probabilities"]
    assert not answer.raw_output_contents  # typed in, typed out
    assert [b.decode() for b in answer.outputs[0].contents.bytes_contents] == labels
    assert list(answer.outputs[1].contents.fp64_contents) == o_s.ravel().tolist()
    assert list(answer.outputs[1].shape) == [3, 3]


def in_child(script: str) -> Any:
    """What a child Python, which may import service.rpc, printed last: one line of JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


# In a child process, which may import service.rpc: every one-row answer service/rpc/wire.py
# writes, against protobuf's serialisation of the message the general path builds.
ONE_ROW_WIRE = """
import itertools, json
import numpy as np
from service.rpc import server, wire
outputs = ("probabilities", "class_index", "label")
versions = ("20261206T151149.147088Z-97148420", "v" * 200)
ids = ("", "7", "\u00e9\u00e8", "x" * 200)
rows = ([0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [5e-324, 1.0, 2.5e-300])
checked, wrong = 0, []
for count in (1, 2, 3):
    for names, raw, k, version, request_id, p in itertools.product(
        itertools.permutations(outputs, count), (True, False), range(3), versions, ids, rows
    ):
        names = list(names)
        fast = wire.one_row_answer(version, request_id, names, raw, probabilities=p, k=k)
        message = server.answer_message(
            version, request_id, names, raw, o_s=np.array([p]), index=np.array([k])
        )
        checked += 1
        if fast != message.SerializeToString():
            wrong.append([names, raw, k, version, request_id, p])
print(json.dumps({"checked": checked, "wrong": wrong[:3]}))
"""


def test_a_one_row_grpc_answer_is_the_bytes_protobuf_writes() -> None:
    """service/rpc/wire.py (for speed only) writes each one-row answer, every choice and order
    of outputs, raw or typed, with any id, to the bytes protobuf writes for the general
    path's message."""
    found = in_child(ONE_ROW_WIRE)
    assert found["wrong"] == []
    assert found["checked"] == 15 * 2 * 3 * 2 * 4 * 4


# In a child process: where ModelInfer runs the work of messages of each size.
WHERE_INFER_RUNS = """
import asyncio, json
from types import SimpleNamespace
from service import inference
from service.rpc import server
from service.rpc import inference_pb2 as pb
ran = []
def infer(state, request, metadata=None, message=b""):
    ran.append([inference.ON_EVENT_LOOP.get(), len(request.SerializeToString())])
    return b""
server.infer = infer
plan = SimpleNamespace(canary=None)
servicer = server.InferenceService(SimpleNamespace(traffic=SimpleNamespace(plan=plan)))
def message(size):  # a request of exactly ``size`` bytes: its id makes up the length
    k = size
    while len(pb.ModelInferRequest(id="x" * k).SerializeToString()) > size:
        k -= 1
    found = pb.ModelInferRequest(id="x" * k).SerializeToString()
    assert len(found) == size, (size, len(found))
    return found
async def main():
    for size in (60, inference.INLINE_BYTES, inference.INLINE_BYTES + 1, 10**7):
        await servicer.ModelInfer(message(size), None)
asyncio.run(main())
print(json.dumps({"ran": ran, "inline_bytes": inference.INLINE_BYTES}))
"""


def test_a_large_message_is_answered_in_the_compute_pool_a_small_one_on_the_loop() -> None:
    """As for HTTP bodies: a message up to INLINE_BYTES (16 KiB) on the event loop, a larger
    one in the compute pool, so that it never holds the loop."""
    found = in_child(WHERE_INFER_RUNS)
    inline = 16 * 1024
    assert found["inline_bytes"] == inline
    assert found["ran"] == [[True, 60], [True, inline], [False, inline + 1], [False, 10**7]]


@pytest.mark.slow
@pytest.mark.parametrize("picked", [[0], [75], [140], [0, 75, 140, 1, 51]], ids=str)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_one_row_and_many_answer_as_predict_raw_or_typed(
    channel: grpc.Channel, http: httpx.Client, picked: list[int], raw: bool
) -> None:
    """One row is answered from Python values, many from arrays: each class, raw or typed,
    every output says what /predict says."""
    rows = RAW[picked]
    n = len(rows)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request = service_pb2.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="measurements", datatype="FP64", shape=[n, 4])
    if raw:
        request.raw_input_contents.append(rows.astype("<f8").tobytes())
    else:
        tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    answer = stub.ModelInfer(request)
    o_s, index, labels = predicted(http, rows)
    assert [o.name for o in answer.outputs] == list(OUTPUTS)
    assert [list(o.shape) for o in answer.outputs] == [[n, 3], [n], [n]]
    assert [o.datatype for o in answer.outputs] == ["FP64", "INT64", "BYTES"]
    if raw:
        probabilities, classes, named = answer.raw_output_contents
        assert np.array_equal(np.frombuffer(probabilities, "<f8").reshape(n, 3), o_s)
        assert np.frombuffer(classes, "<i8").tolist() == index
        assert [label.decode() for label in deserialize_bytes_tensor(named)] == labels
    else:
        assert not answer.raw_output_contents
        contents = [o.contents for o in answer.outputs]
        assert list(contents[0].fp64_contents) == o_s.ravel().tolist()
        assert list(contents[1].int64_contents) == index
        assert [label.decode() for label in contents[2].bytes_contents] == labels


@pytest.mark.slow
def test_grpc_calls_follow_the_routing_key_and_the_pin_as_http_ones(
    server: ServerProcess, channel: grpc.Channel, http: httpx.Client
) -> None:
    auth = {"Authorization": f"Bearer {(server.data_dir / 'api_token').read_text().strip()}"}
    stable = http.get("/routing").json()["stable"]
    canary = ModelStore(server.data_dir / "models").save(random_model(seed=31), {})
    body = {"canary": {"version": canary, "weight": 0.5}}
    assert http.put("/routing", json=body, headers=auth).status_code == 200
    try:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        met: dict[str, set[str]] = {}
        for i in range(40):
            key = f"user-{i % 8}"
            answer = stub.ModelInfer(raw(RAW[:1]), metadata=(("x-routing-key", key),))
            met.setdefault(key, set()).add(answer.model_version)
        assert all(len(versions) == 1 for versions in met.values()), met
        for key, versions in met.items():  # HTTP meets the same version for the same key
            row = {"instances": [dict(zip(FEATURES, RAW[0].tolist(), strict=True))]}
            answer = http.post("/predict", json=row, headers={"X-Routing-Key": key})
            assert {answer.json()["model_version"]} == versions
        unkeyed = {stub.ModelInfer(raw(RAW[:1])).model_version for _ in range(60)}
        assert unkeyed == {stable, canary}
        pinned = raw(RAW[:1])
        pinned.model_version = stable
        assert {stub.ModelInfer(pinned).model_version for _ in range(30)} == {stable}
    finally:
        http.put("/routing", json={}, headers=auth)


@pytest.mark.slow
def test_health_is_serving_through_the_standard_stub(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Check(health_pb2.HealthCheckRequest(service="no.Such"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(stub.ServerReflectionInfo(iter([request])))
    names = {s.name for s in answer.list_services_response.service}
    assert names >= {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


# In a child: what service/rpc/wire.py remembers of a one-row message, against the plain
# reading (protobuf, request_rows, output_names) of each message it then answers.
KNOWN_ROWS = """
import itertools, json, struct
from service.rpc import wire
from service.rpc import inference_pb2 as pb
from service.rpc.server import request_rows
from service.v2.decode import output_names
def request(row, version="", rid="", outputs=(), datatype="FP64", shape=(1, 4)):
    r = pb.ModelInferRequest(model_name="iris", model_version=version, id=rid)
    r.inputs.add(name="measurements", datatype=datatype, shape=list(shape))
    for name in outputs:
        r.outputs.add(name=name)
    r.raw_input_contents.append(struct.pack("<4d", *row))
    return r.SerializeToString()
def plain(message):
    r = pb.ModelInferRequest.FromString(message)
    names = output_names(r.outputs, [o.parameters for o in r.outputs])
    return [r.model_version, r.id, names], request_rows(r, 1000)
rows = [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5], [100.0, 5e-324, 1.0, 99.99]]
checked, wrong = 0, []
for version, rid, outputs in itertools.product(
    ("", "v1"), ("", "id-7", "é" * 100), ((), ("label",), ("label", "probabilities"))
):
    first = request(rows[0], version, rid, outputs)
    asked, _ = plain(first)
    wire.remember(first, wire.Asked(*asked))
    for row in rows:
        message = request(row, version, rid, outputs)
        found = wire.known_row(message)
        checked += 1
        if found is None or [list(found[0]), found[1]] != [asked, plain(message)[1]]:
            wrong.append([version, rid, outputs, row])
seen = request(rows[0])
unknown = [
    wire.known_row(request(rows[0], "never-seen")),
    *(wire.known_row(request([5.1, 3.5, v, 0.2])) for v in (0.0, -1.0, 100.5, float("nan"),
                                                          float("inf"))),
]
# The last 34 bytes look like the row's field but sit inside another (an unknown field 15):
# never remembered, whatever follows.
row_bytes = struct.pack("<4d", *rows[1])
inside = seen + wire.field(15, b"abc" + wire.field(7, row_bytes))
wire.remember(inside, wire.Asked("", "", []))
# The bytes before the row already hold raw contents: never remembered.
twice = seen + wire.field(7, row_bytes)
wire.remember(twice, wire.Asked("", "", []))
long = request(rows[0], rid="x" * wire.KNOWN_BYTES)
wire.remember(long, wire.Asked("", "", []))
refused = [wire.known_row(m) for m in (inside, twice, long)]
for i in range(wire.KNOWN_REQUESTS + 1):
    message = request(rows[0], rid=str(i))
    wire.remember(message, wire.Asked("", str(i), []))
newest = wire.known_row(message)
print(json.dumps({
    "checked": checked, "wrong": wrong[:3], "unknown": unknown, "refused": refused,
    "remembered": len(wire._known), "newest": [list(newest[0]), newest[1]],
}))
"""


def test_a_remembered_one_row_message_is_read_as_protobuf_reads_it() -> None:
    """service/rpc/wire.py (for speed only) reads a one-row message it has seen before but
    for its row: what it asks and its row as protobuf and the plain checks read them, for
    every version, id and outputs; a message never seen, a value out of range, a lookalike
    field inside another, a message with raw contents before the row or too long is left to
    the plain path; and what is remembered is bounded."""
    found = in_child(KNOWN_ROWS)
    assert found["wrong"] == []
    assert found["checked"] == 2 * 3 * 3 * 3
    assert found["unknown"] == [None] * 6
    assert found["refused"] == [None] * 3
    assert 1 <= found["remembered"] <= 256
    assert found["newest"] == [["", "256", []], [[5.1, 3.5, 1.4, 0.2]]]


@pytest.mark.slow
def test_a_message_sent_again_with_other_rows_answers_as_predict(
    channel: grpc.Channel, http: httpx.Client
) -> None:
    """The same message but for its row, again and again (as a client sends it): every
    answer is /predict's for that row, bit for bit; FP32 rows that fill the same 32 bytes
    are read as FP32; a value out of range is refused with the plain path's message."""
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    for i in range(0, 150, 7):
        answer = stub.ModelInfer(raw(RAW[i : i + 1]))
        o_s, index, _ = predicted(http, RAW[i : i + 1])
        probabilities, classes, _ = answer.raw_output_contents
        assert np.array_equal(np.frombuffer(probabilities, "<f8").reshape(1, 3), o_s), i
        assert np.frombuffer(classes, "<i8").tolist() == index
    # Two FP32 rows, every other value such that the 32 bytes read as FP64 would be one
    # row of measurements in range too.
    for pair in ([[5.0, 2.5, 1.5, 3.0], [4.0, 2.0, 0.5, 2.25]],
                 [[6.0, 2.5, 1.0, 3.0], [4.5, 2.0, 0.7, 2.25]]):  # fmt: skip
        fp32 = np.array(pair, dtype="<f4")
        as_fp64 = np.frombuffer(fp32.tobytes(), "<f8")
        assert ((as_fp64 > 0) & (as_fp64 <= 100)).all()
        request = raw(RAW[:1], shape=[2, 4], data=fp32.tobytes())
        request.inputs[0].datatype = "FP32"
        answer = stub.ModelInfer(request)
        o_s, _, _ = predicted(http, fp32.astype(np.float64))
        assert list(answer.outputs[0].shape) == [2, 3]
        got = np.frombuffer(answer.raw_output_contents[0], "<f8").reshape(2, 3)
        assert np.array_equal(got, o_s)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(raw([[5.1, -3.5, 1.4, 0.2]]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "row 0, sepal_width" in refused.value.details()


# -- errors: the status codes and HTTP's messages -----------------------------------------------


def typed(rows: Any, datatype: str = "FP64", **changes: Any) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=changes.pop("model", "iris"))
    array = np.asarray(rows)
    tensor = request.inputs.add(
        name=changes.pop("name", "measurements"),
        datatype=datatype,
        shape=changes.pop("shape", list(array.shape)),
    )
    contents = (
        tensor.contents.fp64_contents if datatype == "FP64" else tensor.contents.fp32_contents
    )
    contents.extend(array.ravel().tolist())
    for name in changes.pop("outputs", []):
        request.outputs.add(name=name)
    if "raw" in changes:
        request.raw_input_contents.append(changes.pop("raw"))
    assert not changes
    return request


def raw(rows: Any, **changes: Any) -> service_pb2.ModelInferRequest:
    array = np.asarray(rows, dtype="<f8")
    request = service_pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(
        name="measurements", datatype="FP64", shape=changes.pop("shape", list(array.shape))
    )
    request.raw_input_contents.append(changes.pop("data", array.tobytes()))
    assert not changes
    return request


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (typed(RAW[:1], model="resnet"), "NOT_FOUND", ["unknown model 'resnet'"]),
        (typed(RAW[:1], name="x"), "INVALID_ARGUMENT", ["unknown input 'x'", "takes one input"]),
        (typed(RAW[:1], "INT64"), "INVALID_ARGUMENT", ["datatype 'INT64' takes FP64 or FP32"]),
        (typed(RAW[:2], shape=[2, 4, 1]), "INVALID_ARGUMENT", ["is not [n, 4]"]),
        (typed(RAW[:2], shape=[3, 4]), "INVALID_ARGUMENT", ["holds 12 values", "has 8"]),
        (typed(RAW[:1], outputs=["logits"]), "INVALID_ARGUMENT", ["unknown output 'logits'"]),
        (typed(RAW[:1], outputs=["label", "label"]), "INVALID_ARGUMENT", ["more than once"]),
        (typed([[5.1, 3.5, np.nan, 0.2]]), "INVALID_ARGUMENT", ["row 0, petal_length", "finite"]),
        (typed(RAW[:1], raw=RAW[:1].tobytes()), "INVALID_ARGUMENT", ["both ways"]),
        (raw(RAW[:2], data=b"\0" * 60), "INVALID_ARGUMENT", ["raw_input_contents[0] 60",
                                                               "not a multiple of FP64's 8"]),
        (raw(RAW[:2], data=b"\0" * 56), "INVALID_ARGUMENT", ["of FP64 is 64 bytes"]),
        (raw([[5.1, -3.5, 1.4, 0.2]]), "INVALID_ARGUMENT", ["row 0, sepal_width", "(0, 100]"]),
        (raw(RAW[:2], shape=[10**9, 4]), "INVALID_ARGUMENT", ["IRIS_MAX_INSTANCES"]),
    ],
)  # fmt: skip
def test_bad_requests_get_the_status_and_the_message_http_gives(
    channel: grpc.Channel, request_: service_pb2.ModelInferRequest, code: str, words: list[str]
) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request_)
    assert refused.value.code() == getattr(grpc.StatusCode, code)
    for word in words:
        assert word in refused.value.details(), refused.value.details()


@pytest.mark.slow
def test_a_message_over_the_body_limit_is_refused_by_its_size(channel: grpc.Channel) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    rows = MAX_BODY // 32 + 1  # FP64 rows of 32 bytes: just over IRIS_MAX_BODY_BYTES
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(raw(np.ones((rows, 4))))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- through HAProxy, three replicas ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.haproxy
def test_grpc_calls_are_spread_over_three_replicas_behind_haproxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """HAProxy's example policy for gRPC (HTTP/2 both ways, each call balanced on its own):
    three replicas, each with a data directory of its own and so a default model of its own,
    answer in turn on one client connection."""
    from harness.haproxy import HAProxy

    work = tmp_path_factory.mktemp("grpc-haproxy")
    with server_pool(work) as start:
        replicas = [
            start(work / f"data-{i}", {"IRIS_GRPC_PORT": str(free_port())}) for i in range(3)
        ]
        grpc_ports = [int(r.extra_env["IRIS_GRPC_PORT"]) for r in replicas]
        with HAProxy(
            [r.port for r in replicas], work / "haproxy", grpc_backends=grpc_ports
        ) as proxy:
            # every gRPC server checked and passed (HAProxy starts them as up until a check
            # fails: calls made before could pass whatever the checks would say)
            wait_for(
                lambda: set(proxy.check_results("replicas_grpc").values()) == {"L7OK"},
                10,
                "the gRPC backends checked",
            )
            proxy.wait_servers_up(3, backend="replicas_grpc")
            with triton.InferenceServerClient(f"127.0.0.1:{proxy.grpc_port}") as client:
                measurements = triton.InferInput("measurements", [1, 4], "FP64")
                measurements.set_data_from_numpy(RAW[:1])
                versions = [
                    client.infer("iris", [measurements]).get_response().model_version
                    for _ in range(6)
                ]
    assert len(set(versions)) == 3, versions  # every replica answered
    assert versions[:3] == versions[3:]  # in turn, call by call on one connection


@pytest.mark.slow
def test_a_malformed_message_a_bad_version_and_a_huge_echo_are_clear_and_bounded(
    channel: grpc.Channel,
) -> None:
    not_protobuf = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as refused:
        not_protobuf(b"\x0a\x02\xff\xfe")  # field 1, a string that is not UTF-8
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid protobuf" in refused.value.details()

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    pinned = typed(RAW[:1])
    pinned.model_version = "../" + "x" * 100_000
    with pytest.raises(grpc.RpcError) as version:
        stub.ModelInfer(pinned)
    assert version.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(version.value.details()) <= 1024

    many = service_pb2.ModelInferRequest(model_name="iris")
    for _ in range(2_000):
        many.inputs.add(name="measurements" * 10, datatype="FP64", shape=[1] * 20)
    with pytest.raises(grpc.RpcError) as echoed:
        stub.ModelInfer(many)
    assert echoed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert echoed.value.details().startswith("2000 inputs (")
    assert len(echoed.value.details()) <= 1024


@pytest.mark.slow
def test_a_server_whose_model_is_corrupt_is_unavailable_and_not_serving(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainResult
) -> None:
    data = tmp_path_factory.mktemp("grpc-not-ready")
    version = ModelStore(data / "models").save(trained.model, {}, activate=True)
    (data / "models" / version / "weights.npz").write_bytes(b"not an npz")
    server = ServerProcess(
        data,
        data.parent / "not-ready.log",
        {"IRIS_GRPC_PORT": str(free_port())},
        ready_path="/healthz",
    )
    server.start()
    try:
        with grpc.insecure_channel(grpc_address(server)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            wait_for(
                lambda: (
                    health.Check(health_pb2.HealthCheckRequest(service="")).status
                    == health_pb2.HealthCheckResponse.NOT_SERVING
                ),
                10,
                "NOT_SERVING",
            )
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert not stub.ServerReady(service_pb2.ServerReadyRequest()).ready
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(typed(RAW[:1]))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert str(data) not in refused.value.details()  # no data directory paths
            pinned = typed(RAW[:1])
            pinned.model_version = version
            with pytest.raises(grpc.RpcError) as corrupt:
                stub.ModelInfer(pinned)
            assert corrupt.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "sha256" in corrupt.value.details()
    finally:
        server.stop()


# -- the iris client and command -----------------------------------------------------------------

CLIENT_PROTO = ROOT / "client" / "iris_client" / "oip.proto"


def test_the_clients_messages_are_the_protocols_field_for_field(tmp_path: Path) -> None:
    ours = compiled(CLIENT_PROTO, tmp_path)
    theirs = descriptor_pb2.FileDescriptorProto()
    service_pb2.DESCRIPTOR.CopyToProto(theirs)
    their_messages = {m.name: m for m in theirs.message_type}
    assert {m.name for m in ours.message_type} == {
        "InferParameter", "InferTensorContents", "ModelInferRequest", "ModelInferResponse"
    }  # fmt: skip
    for message in ours.message_type:
        assert fields(message) == fields(their_messages[message.name]), message.name


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_client_infers_over_either_protocol_as_predict_answers(
    server: ServerProcess, http: httpx.Client, protocol: str
) -> None:
    from iris_client import IrisClient

    with IrisClient(server.url) as iris:
        answer = iris.infer(RAW, protocol=protocol, grpc_url=grpc_address(server))
    o_s, index, labels = predicted(http, RAW)
    assert np.array_equal(answer.probabilities, o_s)
    assert answer.class_index.tolist() == index
    assert answer.labels == labels
    assert answer.model_version == http.get("/models").json()["current"]


@pytest.mark.slow
def test_the_asyncio_client_infers_over_http(server: ServerProcess, http: httpx.Client) -> None:
    import asyncio

    from iris_client import AsyncIrisClient

    async def infer() -> Any:
        async with AsyncIrisClient(server.url) as iris:
            return await iris.infer(RAW[:5])

    answer = asyncio.run(infer())
    assert np.array_equal(answer.probabilities, predicted(http, RAW[:5])[0])


@pytest.mark.slow
def test_the_client_names_grpc_refusals_as_http_ones(server: ServerProcess) -> None:
    from iris_client import BadRequestError, ConnectionFailedError, IrisClient, NotFoundError

    with IrisClient(server.url) as iris:
        with pytest.raises(NotFoundError, match="no stored model version"):
            iris.infer(
                RAW[:1],
                protocol="grpc",
                grpc_url=grpc_address(server),
                model_version="20000101T000000.000000Z-00000000",
            )
        with pytest.raises(BadRequestError, match="row 0, sepal_length"):
            iris.infer([[-1.0, 3.5, 1.4, 0.2]], protocol="grpc", grpc_url=grpc_address(server))
        with pytest.raises(BadRequestError, match="row 0, sepal_length"):
            iris.infer([[-1.0, 3.5, 1.4, 0.2]])
        with pytest.raises(ConnectionFailedError, match=r"cannot reach grpc://127\.0\.0\.1:"):
            iris.infer(RAW[:1], protocol="grpc", grpc_url=f"127.0.0.1:{free_port()}")
        with pytest.raises(ValueError, match=r"\(n, 4\)"):
            iris.infer(np.ones((2, 3)))


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "protocol"), [("npy", "grpc"), ("csv", "http")])
def test_iris_infer_reads_a_file_and_writes_what_predict_answers(
    server: ServerProcess, http: httpx.Client, tmp_path: Path, kind: str, protocol: str
) -> None:
    rows = RAW[::15]
    path = tmp_path / f"rows.{kind}"
    if kind == "npy":
        np.save(path, rows)
    else:
        path.write_text("\n".join(",".join(map(repr, row)) for row in rows.tolist()) + "\n")
    iris = Path(sys.executable).with_name("iris")
    done = subprocess.run(
        [str(iris), "--url", server.url, "infer", str(path), "--protocol", protocol,
         "--grpc-url", grpc_address(server)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "predicted_species,p_setosa,p_versicolor,p_virginica"
    o_s, _, labels = predicted(http, rows)
    assert [line.split(",")[0] for line in lines[1:]] == labels
    shown = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    assert np.array_equal(shown, o_s)  # repr of a float reads back to the same float


# -- load ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_many_streams_at_once_are_all_answered(server: ServerProcess, tmp_path: Path) -> None:
    """h2load (Debian's nghttp2-client) sends 2,000 one-row calls, 32 streams at a time on one
    connection, each the call harness/h2load.py writes: every one is answered with grpc-status 0."""
    tool = require("h2load", "nghttp2-client")
    request = h2load.model_infer_request(service_pb2.ModelInferRequest, RAW[:1])
    body = h2load.write_call(tmp_path / "call.bin", request.SerializeToString())
    before = setosa_predictions(server)
    done = subprocess.run(
        h2load.command(tool, body, grpc_address(server), streams=32, requests=2000),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    found = h2load.summary(done.stdout)
    counts = [found[k] for k in ("requests", "succeeded", "failed", "errored", "timeout")]
    assert counts == [2000, 2000, 0, 0, 0], done.stdout
    # h2load cannot read trailers: that each answer was a prediction, the core's counter says
    assert setosa_predictions(server) - before == 2000


def setosa_predictions(server: ServerProcess) -> float:
    """The inference core's count of rows predicted setosa (GET /metrics)."""
    text = httpx.get(f"{server.url}/metrics").text
    line = next(line for line in text.splitlines() if line.startswith(SETOSA_COUNTER))
    return float(line.rsplit(" ", 1)[1])


SETOSA_COUNTER = 'iris_predictions_total{label="setosa"}'


def test_the_client_checks_an_answer_whole_before_it_returns_it() -> None:
    """Bytes a server (or anything on the way) sends are read only as the answer they must
    be: all three outputs, n rows of 3 classes, labels that are the indices' classes, and
    nothing past them."""
    from iris_client import ProtocolError
    from iris_client._oip import labels_of, read_http_answer

    def answer(labels: bytes, extra: bytes = b"", index: int = 0) -> tuple[bytes, str]:
        blobs = [np.array([[0.9, 0.05, 0.05]]).tobytes(), np.array([index], "<i8").tobytes()]
        outputs = [
            {"name": name, "parameters": {"binary_data_size": len(blob)}}
            for name, blob in zip(OUTPUTS, [*blobs, labels], strict=True)
        ]
        head = json.dumps({"model_version": "v", "outputs": outputs}).encode()
        return head + b"".join(blobs) + labels + extra, str(len(head))

    setosa = (6).to_bytes(4, "little") + b"setosa"
    good = read_http_answer(*answer(setosa), 1, "here")
    assert good.labels == ["setosa"]
    assert good.probabilities.shape == (1, 3)
    for bad in (
        answer((10).to_bytes(4, "little") + b"virgin"),  # a length past the end
        answer(setosa, extra=b"junk"),  # bytes past the outputs
        answer(setosa, index=2),  # the index says virginica
        answer((6).to_bytes(4, "little") + b"daisy!"),  # not a class
    ):
        with pytest.raises(ProtocolError):
            read_http_answer(*bad, 1, "here")
    with pytest.raises(ProtocolError, match="not in the binary form"):
        read_http_answer(b"{}", "\u00b2", 1, "here")  # a digit that is not ASCII
    with pytest.raises(ProtocolError):
        labels_of(setosa + b"\x01\x00", 1, "here")


@pytest.mark.slow
def test_iris_infer_names_a_bad_csv_line_and_refuses_a_bad_npy_file(
    server: ServerProcess, tmp_path: Path
) -> None:
    iris = Path(sys.executable).with_name("iris")
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("# measurements\n5.1,3.5,1.4,0.2\n5.1,-3.5,1.4,0.2\n")
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    words = np.zeros((2, 4), dtype="U3")
    np.save(tmp_path / "words.npy", words)
    for path, protocol, expected in (
        (csv_file, "grpc", (f"{csv_file} line 3: ", "row 1, sepal_width: -3.5 cm")),
        (csv_file, "http", (f"{csv_file} line 3: ", "row 1, sepal_width: -3.5 cm")),
        (empty, "http", ("not a NumPy array file",)),
        (tmp_path / "words.npy", "grpc", ("rows must be numbers",)),
    ):
        done = subprocess.run(
            [str(iris), "--url", server.url, "infer", str(path), "--protocol", protocol,
             "--grpc-url", grpc_address(server)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, (path, done.stderr)
        for words in expected:
            assert words in done.stderr, done.stderr
