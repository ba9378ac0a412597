"""The Open Inference Protocol's inference call, as the client makes it: over HTTP with the
binary tensor data extension, or over gRPC with raw contents. FP64 in, every output in
binary: nothing is written or read as text.

The request and answer shapes live here, shared by the blocking and the asyncio client;
gRPC (blocking only) is :func:`grpc_infer`. Needs NumPy (``iris-client[numpy]``), and for
gRPC grpcio and protobuf (``iris-client[grpc]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from iris_client.errors import ConnectionFailedError, ProtocolError, problem_class

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

MODEL = "iris"
INPUT = "measurements"
FEATURES = 4
HEADER = "Inference-Header-Content-Length"
GRPC_CALL = "/inference.GRPCInferenceService/ModelInfer"
PROTOCOLS = ("http", "grpc")
# gRPC's status codes as the HTTP statuses the client's errors are keyed by.
GRPC_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
}


@dataclass(frozen=True)
class Inferred:
    """One inference call's answer: the version that answered, and per row its class
    probabilities (n, 3), class index and label."""

    model_version: str
    probabilities: NDArray[np.float64]
    class_index: NDArray[np.int64]
    labels: list[str]


def measurements(rows: Any) -> NDArray[np.float64]:
    """The rows as a C-ordered little-endian (n, 4) float64 array."""
    import numpy as np

    array = np.ascontiguousarray(rows, dtype="<f8")
    if array.ndim != 2 or array.shape[1] != FEATURES or array.shape[0] == 0:
        raise ValueError(
            f"rows must be an (n, {FEATURES}) array of measurements, got {array.shape}"
        )
    return array


def path(model_version: str | None) -> str:
    version = "" if model_version is None else f"/versions/{quote(model_version, safe='')}"
    return f"/v2/models/{MODEL}{version}/infer"


def http_request(rows: NDArray[np.float64]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an HTTP inference request in the binary form."""
    data = rows.tobytes()
    header = {
        "inputs": [
            {
                "name": INPUT,
                "shape": list(rows.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + data, {HEADER: str(len(head)), "Content-Type": "application/octet-stream"}


def labels_of(blob: bytes) -> list[str]:
    """A BYTES tensor in binary: each element a 4-byte little-endian length, then its bytes."""
    found, at = [], 0
    while at < len(blob):
        size = int.from_bytes(blob[at : at + 4], "little")
        found.append(blob[at + 4 : at + 4 + size].decode())
        at += 4 + size
    return found


def read_outputs(version: str, n: int, blobs: dict[str, bytes], where: str) -> Inferred:
    """The answer from each output's bytes; a missing or misshapen one is a ProtocolError."""
    import numpy as np

    try:
        o_s = np.frombuffer(blobs["probabilities"], dtype="<f8").reshape(n, -1)
        index = np.frombuffer(blobs["class_index"], dtype="<i8")
        labels = labels_of(blobs["label"])
    except (KeyError, ValueError) as error:
        raise ProtocolError(f"{where}: an inference answer without its outputs ({error})") from None
    if len(index) != n or len(labels) != n:
        raise ProtocolError(f"{where}: {len(index)} answers for {n} rows")
    return Inferred(version, o_s.astype(np.float64), index.astype(np.int64), labels)


def read_http_answer(content: bytes, header: str | None, n: int, where: str) -> Inferred:
    """An HTTP answer in the binary form: the JSON, then each output's bytes in its order."""
    if header is None or not header.isdigit() or int(header) > len(content):
        raise ProtocolError(f"{where}: the answer is not in the binary form ({HEADER}: {header})")
    head = int(header)
    try:
        answer = json.loads(content[:head])
        blobs, at = {}, head
        for output in answer["outputs"]:
            size = output["parameters"]["binary_data_size"]
            blobs[output["name"]] = content[at : at + size]
            at += size
        version = answer["model_version"]
    except (ValueError, KeyError, TypeError) as error:
        raise ProtocolError(f"{where}: not an inference answer ({error})") from None
    return read_outputs(version, n, blobs, where)


def grpc_target(url: str) -> str:
    """``host:port`` from a gRPC URL or address (``grpc://host:port`` or ``host:port``)."""
    return url.removeprefix("grpc://").rstrip("/")


def grpc_infer(
    target: str, rows: NDArray[np.float64], model_version: str | None, timeout: float
) -> Inferred:
    """One ModelInfer call with raw contents; gRPC's errors as the client's."""
    import grpc

    from iris_client import oip_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL, model_version=model_version or "")
    request.inputs.add(name=INPUT, datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            GRPC_CALL,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            answer = call(request, timeout=timeout)
        except grpc.RpcError as error:
            raise grpc_error(error, target) from None
    blobs = {
        output.name: blob
        for output, blob in zip(answer.outputs, answer.raw_output_contents, strict=False)
    }
    return read_outputs(answer.model_version, len(rows), blobs, f"grpc://{target}")


def grpc_error(error: Any, target: str) -> Exception:
    """A gRPC failure as the client's error: a refusal by its HTTP status, else unreachable."""
    code, details = error.code(), error.details() or ""
    status = GRPC_STATUS.get(code.name)
    if status is not None and not (code.name == "UNAVAILABLE" and "connect" in details.lower()):
        return problem_class(status)(status, code.name.replace("_", " ").title(), details)
    if code.name == "DEADLINE_EXCEEDED":
        return ConnectionFailedError(f"grpc://{target}: no answer within the timeout")
    return ConnectionFailedError(f"cannot reach grpc://{target}: {details or code.name}")
