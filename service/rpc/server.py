"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``, with the
standard health service and server reflection, in every worker beside HTTP.

The server runs on the worker's event loop (grpc.aio) and answers from the same state as
HTTP: the same registry (one model swap seen by both), the same inference core (its row
limit and counters) and the same checks and messages as ``/v2`` (service/v2/decode.py).
Errors are gRPC status codes carrying HTTP's message: INVALID_ARGUMENT for a bad request,
NOT_FOUND for an unknown model or version, FAILED_PRECONDITION for a corrupt stored
version, RESOURCE_EXHAUSTED for a message over the limit, UNAVAILABLE while not ready.

A request's values come as typed ``contents`` (``fp64_contents``, ``fp32_contents``) or as
little-endian bytes in ``raw_input_contents``; the answer's come the same way it asked.
Messages are bounded by IRIS_MAX_BODY_BYTES, as HTTP bodies are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from model.network import N_FEATURES, FloatArray, IntArray
from service import inference
from service.body import Rows
from service.deps import State
from service.errors import public
from service.inference import Headers, OneRow
from service.rpc import inference_pb2 as pb
from service.rpc import wire
from service.v2.decode import (
    binary_rows,
    check_datatype,
    check_measurements,
    check_shape,
    output_names,
)
from service.v2.errors import INTERNAL_ERROR, bad_request, protocol_status
from service.v2.protocol import (
    EXTENSIONS,
    INPUT,
    MODEL_NAME,
    OUTPUTS,
    PLATFORM,
    SERVER_NAME,
    SERVER_VERSION,
    UNSUPPORTED,
)
from service.v2.routes import binary_tensor, check_model, outputs_data

log = logging.getLogger("iris.grpc")
T = TypeVar("T")
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
HEALTH_SECONDS = 0.5  # how often the health service looks at readiness
# A status message is metadata, which clients cap at 8-16 KiB: what a request echoes is cut.
MAX_MESSAGE = 1024
# At most this many calls at once in a worker (each may hold a message of up to
# IRIS_MAX_BODY_BYTES until the compute pool takes it), and this many on one connection.
MAX_CONCURRENT_CALLS = 64
MAX_STREAMS = 100
IDLE_MS = 60_000  # a connection with no call for this long is closed


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message of an error, as HTTP's /v2 would word it."""
    found = protocol_status(error)
    if found is None:
        log.error("unexpected error in a gRPC call", exc_info=error)
        return grpc.StatusCode.INTERNAL, INTERNAL_ERROR
    status, message, _ = found
    text = public(message)  # no data directory paths to clients, as over HTTP
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return CODES.get(status, grpc.StatusCode.UNKNOWN), text


def request_rows(request: pb.ModelInferRequest, limit: int) -> Any:
    """The measurements (n, 4) of an inference request, checked as /v2 checks them."""
    check_model(request.model_name)
    inputs = request.inputs  # each field read once: a read builds a wrapper
    count = len(inputs)
    takes = (
        f"model {MODEL_NAME!r} takes one input, {INPUT!r} (FP64 or FP32, shape [n, {N_FEATURES}])"
    )
    if count != 1:
        shown = ", ".join(repr(t.name[:80]) for t in inputs[:3])
        raise bad_request(f"{count} inputs ({shown}{', ...' if count > 3 else ''}): {takes}")
    tensor = inputs[0]
    if tensor.name != INPUT:
        raise bad_request(f"unknown input {tensor.name[:80]!r}: {takes}")
    datatype = tensor.datatype
    check_datatype(datatype)
    if tensor.parameters:
        for name, message in UNSUPPORTED.items():
            if name in tensor.parameters:
                raise bad_request(message)
    shape = tensor.shape
    if len(shape) != 2:
        shown = f"{list(shape[:8])}{' ...' if len(shape) > 8 else ''}"
        raise bad_request(
            f"input {INPUT!r}: shape {shown} ({len(shape)} dimensions) is not [n, {N_FEATURES}]"
        )
    n = check_shape((shape[0], shape[1]), limit)
    contents = tensor.contents
    given = [field.name for field, _ in contents.ListFields()]
    raw_contents = request.raw_input_contents
    if raw_contents:
        if given:
            raise bad_request(
                f"input {INPUT!r} is given both ways: as contents and as raw_input_contents"
            )
        if len(raw_contents) != 1:
            raise bad_request(
                f"raw_input_contents has {len(raw_contents)} entries; the request has one input"
            )
        raw = raw_contents[0]
        return binary_rows(memoryview(raw), len(raw), datatype, n, "raw_input_contents[0]")
    wanted = "fp64_contents" if datatype == "FP64" else "fp32_contents"
    if given != [wanted]:
        shown = ", ".join(given) or "no contents"
        raise bad_request(f"input {INPUT!r} of {datatype} needs {wanted}; it has {shown}")
    values = getattr(contents, wanted)
    if len(values) != n * N_FEATURES:
        raise bad_request(
            f"input {INPUT!r}: shape [{n}, {N_FEATURES}] holds {n * N_FEATURES} values, "
            f"{wanted} has {len(values)}"
        )
    rows = np.array(values, dtype=np.float64).reshape(n, N_FEATURES)
    check_measurements(rows)
    return [rows[0].tolist()] if n == 1 else rows


def infer(
    state: State, request: pb.ModelInferRequest, metadata: Headers = None, message: bytes = b""
) -> bytes:
    """The whole of a ModelInfer call: its rows, the prediction, the serialised answer;
    ``metadata`` may hold its x-routing-key. Raw in, raw out; typed contents otherwise.
    ``message``: the request's bytes, remembered when it is one FP64 row in raw contents."""
    rows = request_rows(request, state.inference.max_instances)
    outputs = request.outputs
    names = output_names(outputs, [output.parameters for output in outputs])
    predicted = state.inference.predict(rows, request.model_version or None, metadata)
    raw = bool(request.raw_input_contents)
    if isinstance(predicted, OneRow):
        version, probabilities, k = predicted
        if raw and message:  # one row of FP64 when its raw contents end the message
            wire.remember(message, wire.Asked(request.model_version, request.id, names))
        return wire.one_row_answer(
            version, request.id, names, raw, probabilities=probabilities, k=k
        )
    version, o_s, index = predicted
    answer = answer_message(version, request.id, names, raw, o_s=o_s, index=index)
    serialised: bytes = answer.SerializeToString()
    return serialised


def infer_known(state: State, asked: wire.Asked, rows: Rows, metadata: Headers = None) -> bytes:
    """:func:`infer` of a remembered message (service/rpc/wire.py), given what it asks and
    its row: the same answer, with no protobuf read."""
    predicted = state.inference.predict(rows, asked.version or None, metadata)
    if not isinstance(predicted, OneRow):
        raise TypeError("a remembered message holds one row")
    version, probabilities, k = predicted
    return wire.one_row_answer(
        version, asked.id, asked.outputs, True, probabilities=probabilities, k=k
    )


def answer_message(
    version: str,
    request_id: str,
    names: list[str],
    raw: bool,
    *,
    o_s: FloatArray,
    index: IntArray,
) -> pb.ModelInferResponse:
    """The answer for probabilities o_s (n, 3) and class indices: outputs ``names`` in order,
    raw or typed. (One row's is written faster by service/rpc/wire.py, to the same bytes.)"""
    n = len(index)
    answer = pb.ModelInferResponse(model_name=MODEL_NAME, model_version=version, id=request_id)
    typed = {} if raw else outputs_data(o_s, index, names)
    for name in names:
        datatype, shape = OUTPUTS[name]
        tensor = answer.outputs.add(name=name, datatype=datatype, shape=[n, *shape[1:]])
        if raw:
            answer.raw_output_contents.append(binary_tensor(name, o_s, index))
        elif name == "probabilities":
            tensor.contents.fp64_contents.extend(typed[name].tolist())
        elif name == "class_index":
            tensor.contents.int64_contents.extend(typed[name].tolist())
        else:
            tensor.contents.bytes_contents.extend(label.encode() for label in typed[name])
    return answer


class InferenceService:
    """The protocol's calls, answered from the worker's state."""

    def __init__(self, state: State) -> None:
        self.state = state

    def served(self, name: str, version: str) -> Any:
        check_model(name)
        return inference.served_model(self.state.registry, version or None)

    async def ServerLive(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.state.registry.active is not None)

    async def ModelReady(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802
        await self.in_pool(context, lambda: self.served(request.name, request.version))
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802
        def metadata() -> Any:
            check_model(request.name)
            if request.version:
                self.served(request.name, request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=MODEL_NAME,
                versions=self.state.store.versions(),
                platform=PLATFORM,
                inputs=[tensor(name=INPUT, datatype="FP64", shape=[-1, N_FEATURES])],
                outputs=[
                    tensor(name=name, datatype=datatype, shape=shape)
                    for name, (datatype, shape) in OUTPUTS.items()
                ],
            )

        return await self.in_pool(context, metadata)

    async def ModelInfer(self, message: bytes, context: aio.ServicerContext) -> bytes:  # noqa: N802
        """A message remembered (service/rpc/wire.py) or small is answered on the event
        loop, a large one in the compute pool, as HTTP bodies are (INLINE_BYTES)."""
        # Read only while a canary is set: the metadata's one use is an x-routing-key.
        metadata = context.invocation_metadata() if self.state.traffic.plan.canary else None
        known = wire.known_row(message)
        if known is not None:
            answer = await self.inline(context, lambda: infer_known(self.state, *known, metadata))
            if answer is not None:
                return answer
        request = await parsed(pb.ModelInferRequest, message, context)
        if len(message) > inference.INLINE_BYTES:
            return await self.in_pool(context, lambda: infer(self.state, request, metadata))
        answer = await self.inline(context, lambda: infer(self.state, request, metadata, message))
        if answer is None:  # a pinned version to load from disk: in the pool
            return await self.in_pool(context, lambda: infer(self.state, request, metadata))
        return answer

    async def inline(self, context: aio.ServicerContext, work: Callable[[], T]) -> T | None:
        """``work()`` on the event loop, or the call aborted with its error's status; None
        when it needs a version loaded from disk first (then the pool is the place)."""
        token = inference.ON_EVENT_LOOP.set(True)
        try:
            return work()
        except inference.NotLoadedError:
            return None
        except Exception as error:
            await refuse(context, error)
            raise  # refuse() raises: never reached
        finally:
            inference.ON_EVENT_LOOP.reset(token)

    async def in_pool(self, context: aio.ServicerContext, work: Callable[[], T]) -> T:
        """``work()`` in the compute pool, or the call aborted with its error's status."""
        try:
            return await inference.in_compute_pool(work)
        except Exception as error:
            await refuse(context, error)
            raise  # refuse() raises: never reached


async def refuse(context: aio.ServicerContext, error: Exception) -> None:
    """End the call with the status and message of ``error`` (context.abort raises)."""
    code, message = status_of(error)
    await context.abort(code, message)


METHODS = (
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
)
BYTES_CALLS = frozenset({"ModelInfer"})
"""The calls given their message as bytes (they parse it themselves, when they need to),
which return their answer serialised already."""


async def parsed(kind: Any, data: bytes, context: aio.ServicerContext) -> Any:
    """The message of type ``kind`` in ``data``; a message that is not valid protobuf is
    INVALID_ARGUMENT naming it (grpc's own parsing would answer UNKNOWN and log a traceback
    for every such call)."""
    try:
        return kind.FromString(data)
    except DecodeError as error:
        message = f"the {kind.__name__} message is not valid protobuf: {error}"
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message[:MAX_MESSAGE])


def handlers(servicer: InferenceService) -> grpc.GenericRpcHandler:
    """The service's calls, each taking its message as bytes and parsing it itself
    (:func:`parsed`)."""

    def method(name: str) -> grpc.RpcMethodHandler:
        call = getattr(servicer, name)
        kind, answer = getattr(pb, f"{name}Request"), getattr(pb, f"{name}Response")
        in_bytes = name in BYTES_CALLS

        async def handle(data: bytes, context: aio.ServicerContext) -> Any:
            if in_bytes:
                return await call(data, context)
            return await call(await parsed(kind, data, context), context)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=None,
            response_serializer=None if in_bytes else answer.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(SERVICE, {name: method(name) for name in METHODS})


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC reads it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    """The gRPC server of one worker: started in the app's lifespan, stopped with it."""

    def __init__(self, state: State, host: str, port: int, *, shared_port: bool) -> None:
        limit = min(state.settings.max_body_bytes, 2**31 - 1)  # a C int in gRPC's core
        self.state = state
        self.server = aio.server(
            maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", -1),
                ("grpc.max_concurrent_streams", MAX_STREAMS),
                ("grpc.max_connection_idle_ms", IDLE_MS),
                # Workers of one server share the port, as they share HTTP's; a lone worker
                # does not, so a second server on the same port is refused, not merged
                # (iris-serve checks the port is free before it starts its workers).
                ("grpc.so_reuseport", 1 if shared_port else 0),
            ],
        )
        self.server.add_generic_rpc_handlers((handlers(InferenceService(state)),))
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        where = address(host, port)
        try:
            self.port = self.server.add_insecure_port(where)
        except RuntimeError as error:
            raise RuntimeError(
                f"cannot listen for gRPC on {where} (IRIS_GRPC_PORT): {error}; "
                "choose another port, or 0 to turn gRPC off"
            ) from None
        self.watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        self.watch = asyncio.create_task(self.follow_readiness())
        log.info("gRPC: listening on port %d", self.port)

    async def follow_readiness(self) -> None:
        """The health service says SERVING while a model is loaded, NOT_SERVING otherwise."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            status = serving if self.state.registry.active is not None else not_serving
            for name in ("", SERVICE):
                await self.health.set(name, status)
            await asyncio.sleep(HEALTH_SECONDS)

    async def stop(self, grace: float) -> None:
        if self.watch is not None:
            self.watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watch
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
