"""The Open Inference Protocol's inference call, as the client makes it: over HTTP with the
binary tensor data extension, or over gRPC with raw contents. FP64 in, every output in
binary: nothing is written or read as text.

The request and answer shapes live here, shared by the blocking and the asyncio client;
gRPC (blocking only) is :func:`grpc_infer`, retried by the client's RetryPolicy as HTTP is
(:func:`grpc_retry_delay` says which failures, and how long to wait). Needs NumPy
(``iris-client[numpy]``), and for gRPC grpcio and protobuf (``iris-client[grpc]``). An answer
is checked whole before it is returned: every output there, of the shapes the rows need,
labels that are the classes'.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from iris_client._core import RetryPolicy, may_retry
from iris_client.errors import ConnectionFailedError, InputError, ProtocolError, problem_class
from iris_client.types import CLASSES

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

MODEL = "iris"
INPUT = "measurements"
FEATURES = 4
HEADER = "Inference-Header-Content-Length"
GRPC_CALL = "/inference.GRPCInferenceService/ModelInfer"
GRPC_PORT = 8001  # the server's default IRIS_GRPC_PORT
PROTOCOLS = ("http", "grpc")
# gRPC's status codes, as the server sends them, as the HTTP statuses of the client's errors.
GRPC_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 413,
    "INTERNAL": 500,
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


def numpy() -> Any:
    try:
        import numpy as np
    except ImportError:
        raise InputError("inference takes NumPy arrays: pip install 'iris-client[numpy]'") from None
    return np


def measurements(rows: Any) -> NDArray[np.float64]:
    """The rows as a C-ordered little-endian (n, 4) float64 array; InputError otherwise."""
    np = numpy()
    if isinstance(rows, np.ndarray) and rows.dtype.kind not in "biuf":
        raise InputError(f"rows must be numbers, not an array of {rows.dtype}")
    try:
        array = np.ascontiguousarray(rows, dtype="<f8")
    except (TypeError, ValueError) as error:
        raise InputError(f"rows must be an (n, {FEATURES}) array of numbers: {error}") from None
    if array.ndim != 2 or array.shape[1] != FEATURES or array.shape[0] == 0:
        raise InputError(
            f"rows must be an (n, {FEATURES}) array of measurements, not {array.shape}"
        )
    checked: NDArray[Any] = array
    return checked


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


def labels_of(blob: bytes, n: int, where: str) -> list[str]:
    """A BYTES tensor of n elements in binary: each a 4-byte little-endian length, then its
    bytes; the blob must hold exactly those."""
    found, at = [], 0
    for _ in range(n):
        if at + 4 > len(blob):
            break
        size = int.from_bytes(blob[at : at + 4], "little")
        if at + 4 + size > len(blob):
            break
        found.append(blob[at + 4 : at + 4 + size].decode("utf-8", "replace"))
        at += 4 + size
    if len(found) != n or at != len(blob):
        raise ProtocolError(f"{where}: the labels are not {n} BYTES elements")
    return found


def read_outputs(version: Any, n: int, blobs: dict[str, bytes], where: str) -> Inferred:
    """The answer from each output's bytes, checked: a missing, misshapen or inconsistent
    output is a ProtocolError (what reaches the caller is what the model computes)."""
    np = numpy()
    try:
        probabilities, index, labels = blobs["probabilities"], blobs["class_index"], blobs["label"]
    except KeyError as error:
        raise ProtocolError(f"{where}: an inference answer without its output {error}") from None
    classes = len(CLASSES)
    if not isinstance(version, str) or len(probabilities) != n * classes * 8 or len(index) != n * 8:
        raise ProtocolError(f"{where}: not the answer for {n} rows of {classes} classes")
    o_s = np.frombuffer(probabilities, dtype="<f8").reshape(n, classes).astype(np.float64)
    k = np.frombuffer(index, dtype="<i8").astype(np.int64)
    names = labels_of(labels, n, where)
    if ((k < 0) | (k >= classes)).any() or names != [CLASSES[i] for i in k.tolist()]:
        raise ProtocolError(f"{where}: class indices and labels that do not agree")
    return Inferred(version, o_s, k, names)


def read_http_answer(content: bytes, header: str | None, n: int, where: str) -> Inferred:
    """An HTTP answer in the binary form: the JSON, then each output's bytes in its order,
    nothing after them."""
    if header is None or not (header.isascii() and header.isdigit()) or int(header) > len(content):
        raise ProtocolError(f"{where}: the answer is not in the binary form ({HEADER}: {header})")
    head = int(header)
    try:
        answer = json.loads(content[:head])
        blobs, at = {}, head
        for output in answer["outputs"]:
            size = output["parameters"]["binary_data_size"]
            if type(size) is not int or size < 0:
                raise ValueError(f"binary_data_size {size!r}")
            blobs[output["name"]] = content[at : at + size]
            at += size
        version = answer["model_version"]
    except (ValueError, KeyError, TypeError) as error:
        raise ProtocolError(f"{where}: not an inference answer ({error})") from None
    if at != len(content):
        raise ProtocolError(f"{where}: {len(content) - at} bytes past the outputs it declares")
    return read_outputs(version, n, blobs, where)


def grpc_target(url: str) -> str:
    """``host:port`` from a gRPC address: ``grpc://host:port`` or ``host:port``."""
    if "://" in url and not url.startswith("grpc://"):
        raise InputError(f"a gRPC address is grpc://HOST:PORT or HOST:PORT, not {url!r}")
    return url.removeprefix("grpc://").rstrip("/")


def grpc_default(http_url: str) -> str:
    """The gRPC address of the server at ``http_url``: its host, the default gRPC port."""
    host = urlsplit(http_url).hostname or "127.0.0.1"
    return f"[{host}]:{GRPC_PORT}" if ":" in host else f"{host}:{GRPC_PORT}"


def grpc_infer(
    target: str,
    rows: NDArray[np.float64],
    model_version: str | None,
    *,
    timeout: float,
    max_answer_bytes: int,
    retry: RetryPolicy,
) -> Inferred:
    """ModelInfer with raw contents, sent again as ``retry`` and :func:`grpc_retry_delay`
    allow, every attempt within the one ``timeout`` of the whole call; gRPC's errors as the
    client's.

    Each attempt is given what is left of the deadline as its gRPC timeout, and a channel of
    its own: one after a refused or broken connection connects at once, where the last
    channel would fail it fast while it waits out its reconnection backoff (about a second).
    ``wait_for_ready`` is off, so an attempt without a connection fails at once instead of
    waiting for one.
    """
    try:
        import grpc
        from google.protobuf.runtime_version import VersionError

        try:
            from iris_client import oip_pb2 as pb
        except VersionError as error:
            raise ImportError(str(error)) from None
    except ImportError as error:
        raise InputError(
            f"gRPC needs grpcio and protobuf 6.33.5 or newer: pip install "
            f"'iris-client[grpc]' ({error})"
        ) from None
    request = pb.ModelInferRequest(model_name=MODEL, model_version=model_version or "")
    request.inputs.add(name=INPUT, datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    options = [("grpc.max_receive_message_length", min(max_answer_bytes, 2**31 - 1))]
    deadline = time.monotonic() + timeout
    retries = 0
    while True:
        try:
            with grpc.insecure_channel(target, options=options) as channel:
                call = channel.unary_unary(
                    GRPC_CALL,
                    request_serializer=pb.ModelInferRequest.SerializeToString,
                    response_deserializer=pb.ModelInferResponse.FromString,
                )
                left = max(0.0, deadline - time.monotonic())
                answer = call(request, timeout=left, wait_for_ready=False)
            break
        except grpc.RpcError as error:
            delay = grpc_retry_delay(error, retry, retries)
            if delay is None or not may_retry(retry, retries, delay, deadline):
                raise grpc_error(error, target) from None
            time.sleep(delay)
            retries += 1
    where = f"grpc://{target}"
    if len(answer.outputs) != len(answer.raw_output_contents):
        raise ProtocolError(f"{where}: outputs without their raw contents")
    blobs = dict(zip((o.name for o in answer.outputs), answer.raw_output_contents, strict=True))
    return read_outputs(answer.model_version, len(rows), blobs, where)


# How gRPC's channel words its own failures (no server sent these).
CHANNEL_FAILURES = (
    "failed to connect",
    "errors resolving",
    "dns resolution failed",
    "socket closed",
    "connection reset",
    "connections to all backends failing",
    "client: ",
    "stream removed (client: ",  # an answer over max_receive_message_length (grpcio 1.85)
)
# How a gRPC server refuses a call past its maximum_concurrent_rpcs (the service takes 64 at
# once in a worker): busy, a refusal to retry, where other RESOURCE_EXHAUSTED are a message
# too large.
BUSY = "concurrent rpc limit exceeded"
# gRPC's server pushback (its retry design, A6): milliseconds to wait before the next attempt;
# negative or malformed, do not retry.
PUSHBACK = "grpc-retry-pushback-ms"


def channel_failure(details: str) -> bool:
    return details.lower().startswith(CHANNEL_FAILURES)


def pushback(error: Any) -> float | None:
    """Seconds the server's ``grpc-retry-pushback-ms`` asks the client to wait; None when it
    sent none; -1.0 when it is negative or malformed (the server says: do not retry)."""
    for key, value in error.trailing_metadata() or ():
        if key == PUSHBACK:
            text = value if isinstance(value, str) else value.decode("latin-1")
            return int(text) / 1000 if text.isascii() and text.isdigit() else -1.0
    return None


def server_busy(error: Any) -> bool:
    """A RESOURCE_EXHAUSTED the server sent to be retried: its concurrent-call limit, or any
    with a pushback; not a message over a size limit (the request's or the answer's)."""
    details = error.details() or ""
    return (
        error.code().name == "RESOURCE_EXHAUSTED"
        and not channel_failure(details)
        and (details.lower().startswith(BUSY) or pushback(error) is not None)
    )


def grpc_retry_delay(error: Any, policy: RetryPolicy, retries: int) -> float | None:
    """Seconds to wait before ModelInfer is sent again after ``error``; None when it must not be.

    ModelInfer changes nothing, so a call the server may have begun is sent again as safely as
    one that never left: UNAVAILABLE (no connection, a reset or closed one, a server not ready
    or going away) and a busy RESOURCE_EXHAUSTED (:func:`server_busy`), with the policy's
    backoff, or the server's pushback as HTTP's Retry-After. A negative pushback, the whole
    call's DEADLINE_EXCEEDED and every other status are final.
    """
    wait = pushback(error)
    if wait is not None and wait < 0:
        return None
    if error.code().name == "UNAVAILABLE" or server_busy(error):
        return policy.delay(retries, wait)
    return None


def grpc_error(error: Any, target: str) -> Exception:
    """A gRPC failure as the client's error: a status the server sent by its HTTP status (a
    busy RESOURCE_EXHAUSTED as UNAVAILABLE's 503); one of the channel's own (no connection, a
    name that does not resolve, a closed socket, the deadline, an answer over the size cap)
    as a connection or protocol failure."""
    code, details = error.code(), error.details() or ""
    local = channel_failure(details)
    where = f"grpc://{target}"
    if code.name == "DEADLINE_EXCEEDED":
        return ConnectionFailedError(f"{where}: no answer within the timeout")
    if code.name == "RESOURCE_EXHAUSTED" and local:
        return ProtocolError(f"{where}: the answer is larger than max_answer_bytes ({details})")
    status = 503 if server_busy(error) else GRPC_STATUS.get(code.name)
    if status is not None and not local:
        wait = pushback(error)
        return problem_class(status)(
            status,
            code.name.replace("_", " ").title(),
            details,
            retry_after=wait if wait is not None and wait >= 0 else None,
        )
    return ConnectionFailedError(f"cannot reach {where}: {details or code.name}")
