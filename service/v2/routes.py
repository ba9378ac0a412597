"""The protocol's routes: server and model metadata and health, and inference.

Inference is a hot route (service/routing.py): the app's edge answers it from the app's
table before routing; the versioned and unversioned paths share one handler, which reads
the version from the path.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match

from model.data import CLASSES
from model.network import N_FEATURES, FloatArray, IntArray
from model.persistence import StoredModel
from service import inference
from service.deps import State, state
from service.inference import Headers, OneRow
from service.responses import json_response
from service.routing import Answer, HotRoute, endpoint_for
from service.v2.decode import inflated, split_binary
from service.v2.errors import ProtocolError, bad_request, error_responses, protocol_error
from service.v2.known import request_input
from service.v2.protocol import (
    BINARY_HEADER,
    EXTENSIONS,
    INPUT,
    MODEL_NAME,
    OUTPUTS,
    PLATFORM,
    SERVER_NAME,
    SERVER_VERSION,
)


class ProtocolRoute(APIRoute):
    """A route whose every error, expected or not, is answered ``{"error": ...}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as error:
                return protocol_error(request, error)

        return guarded


router = APIRouter(route_class=ProtocolRoute, tags=["Open Inference Protocol (v2)"])
INFER_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
}


def check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise ProtocolError(
            404, f"unknown model {name[:80]!r}: this server serves one model, {MODEL_NAME!r}"
        )


def path_model(request: Request) -> tuple[str, str | None]:
    """The model name and version (None: the active one) of a versioned or unversioned path."""
    params = request.path_params
    return params["model_name"], params.get("model_version")


def served(request: Request) -> StoredModel:
    """The model a path names: 404 unknown, 409 corrupt, 503 not ready."""
    name, version = path_model(request)
    check_model(name)
    return inference.served_model(state(request).registry, version)


async def model_metadata(request: Request) -> Response:
    name, version = path_model(request)
    check_model(name)
    if version is not None:
        served(request)
    return json_response(
        {
            "name": MODEL_NAME,
            "versions": state(request).store.versions(),
            "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, N_FEATURES]}],
            "outputs": [
                {"name": output, "datatype": datatype, "shape": shape}
                for output, (datatype, shape) in OUTPUTS.items()
            ],
        }
    )


async def model_ready(request: Request) -> Response:
    served(request)
    return json_response({"name": MODEL_NAME, "ready": True})


_LABELS = np.array(CLASSES, dtype=object)  # by class index, indexed with an array at once
_BINARY_HEADER = BINARY_HEADER.encode()


def infer_answer(
    st: State,
    body: bytes,
    version: str | None,
    binary: memoryview | None = None,
    headers: Headers = None,
) -> bytes | Answer:
    """The answer to an inference request: its JSON (``body``, already inflated), and the
    binary tensor data after it, if any; ``headers`` may hold its X-Routing-Key."""
    rows, names, as_binary, request_id = request_input(body, st.inference.max_instances, binary)
    predicted = st.inference.predict(rows, version, headers)
    if isinstance(predicted, OneRow):
        served, probabilities, k = predicted
        if not any(as_binary):
            return row_answer_json(served, request_id, names, probabilities, k)
        head = (served, request_id, names, as_binary)
        return row_binary_answer(*head, probabilities=probabilities, k=k)
    served, o_s, index = predicted
    if any(as_binary):
        return binary_answer(served, request_id, names, as_binary, o_s=o_s, index=index)
    return answer_json(served, request_id, names, len(index), outputs_data(o_s, index))


# Each label as the binary extension writes a BYTES element: its length (4 bytes,
# little-endian), then its UTF-8 bytes.
_LABEL_BYTES = np.array(
    [len(label).to_bytes(4, "little") + label.encode() for label in CLASSES], dtype=object
)


def binary_tensor(name: str, o_s: FloatArray, index: IntArray) -> bytes:
    """An output's data in binary: little-endian, row-major."""
    if name == "probabilities":
        return np.ascontiguousarray(o_s, dtype="<f8").tobytes()
    if name == "class_index":
        return index.astype("<i8").tobytes()
    return label_bytes(index)


# Every run of four labels as BYTES elements, by its class indices read as a base-3 number.
_LABELS_BY_FOUR = np.array(
    [b"".join(four) for four in itertools.product(_LABEL_BYTES.tolist(), repeat=4)], dtype=object
)
_BASE = len(CLASSES) ** np.arange(3, -1, -1)


def label_bytes(index: IntArray) -> bytes:
    """The labels of class indices ``index`` as BYTES elements, in order: what
    ``b"".join(_LABEL_BYTES[index].tolist())`` writes, joined four rows at a time from the
    table of every four labels (a third of the time at 10,000 rows; tests/test_decoders.py
    holds the two equal)."""
    whole = len(index) - len(index) % 4
    parts = _LABELS_BY_FOUR[index[:whole].reshape(-1, 4) @ _BASE].tolist()
    parts += _LABEL_BYTES[index[whole:]].tolist()
    return b"".join(parts)


def binary_answer(
    version: str,
    request_id: str | None,
    names: list[str],
    as_binary: list[bool],
    *,
    o_s: FloatArray,
    index: IntArray,
) -> Answer:
    """The answer with the binary tensor data extension: the JSON, whose binary outputs carry
    ``binary_data_size`` instead of ``data``, then their bytes in that order; the JSON's
    length in Inference-Header-Content-Length."""
    answer: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": version}
    if request_id is not None:
        answer["id"] = request_id
    n = len(index)
    data = outputs_data(
        o_s, index, [name for name, b in zip(names, as_binary, strict=True) if not b]
    )
    outputs, blobs = [], []
    for name, binary in zip(names, as_binary, strict=True):
        if not binary:
            outputs.append(tensor(name, n, data[name]))
            continue
        blobs.append(binary_tensor(name, o_s, index))
        described = tensor(name, n, None)
        del described["data"]
        outputs.append(described | {"parameters": {"binary_data_size": len(blobs[-1])}})
    answer["outputs"] = outputs
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    return binary_joined(head, blobs)


def binary_joined(head: bytes, blobs: list[bytes]) -> Answer:
    headers = [
        (b"content-type", b"application/octet-stream"),
        (_BINARY_HEADER, b"%d" % len(head)),
    ]
    return Answer(b"".join([head, *blobs]), headers)


def outputs_data(
    o_s: FloatArray, index: IntArray, names: Iterable[str] = OUTPUTS
) -> dict[str, Any]:
    """Each output's data for probabilities o_s (n, 3) and class indices: flat, row-major,
    as the protocol writes it (those of ``names`` only)."""
    data: dict[str, Any] = {}
    for name in names:
        if name == "probabilities":
            data[name] = o_s.ravel()
        elif name == "class_index":
            data[name] = index.astype(np.int64)
        else:
            data[name] = _LABELS[index].tolist()
    return data


def tensor(name: str, n: int, data: Any) -> dict[str, Any]:
    datatype, shape = OUTPUTS[name]
    return {"name": name, "datatype": datatype, "shape": [n, *shape[1:]], "data": data}


def answer_json(
    version: str, request_id: str | None, names: list[str], n: int, data: dict[str, Any]
) -> bytes:
    """The inference answer: outputs ``names`` of n rows, their flat ``data`` by name."""
    answer: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": version}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = [tensor(name, n, data[name]) for name in names]
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


# The outputs of one row as answer_json writes them: by class index, and the probabilities'
# up to their data (tensor() writes "data" last).
_ROW_CLASS_INDEX = [orjson.dumps(tensor("class_index", 1, [k])) for k in range(len(CLASSES))]
_ROW_LABEL = [orjson.dumps(tensor("label", 1, [label])) for label in CLASSES]
_ROW_PROBABILITIES = orjson.dumps(tensor("probabilities", 1, []))[: -len(b"[]}")]
_ANSWER_HEAD = orjson.dumps({"model_name": MODEL_NAME})[:-1] + b',"model_version":'


def row_output_json(name: str, probabilities: list[float], k: int) -> bytes:
    """One row's output in JSON, as answer_json writes it."""
    if name == "probabilities":
        return b"%s%s}" % (_ROW_PROBABILITIES, orjson.dumps(probabilities))
    return _ROW_CLASS_INDEX[k] if name == "class_index" else _ROW_LABEL[k]


def row_answer_json(
    version: str, request_id: str | None, names: list[str], probabilities: list[float], k: int
) -> bytes:
    """:func:`answer_json` of one row, its pieces written once and joined (the same bytes)."""
    named = b"" if request_id is None else b',"id":' + orjson.dumps(request_id)
    outputs = b",".join([row_output_json(name, probabilities, k) for name in names])
    return b'%s%s%s,"outputs":[%s]}' % (_ANSWER_HEAD, orjson.dumps(version), named, outputs)


def _described(name: str, size: int) -> bytes:
    """One row's output, in binary: its JSON without data, with its byte size."""
    described = tensor(name, 1, None)
    del described["data"]
    return orjson.dumps(described | {"parameters": {"binary_data_size": size}})


_THREE_DOUBLES = struct.Struct("<3d")
# One row's class index and label in binary, by class index.
_ROW_BLOBS: dict[str, list[bytes]] = {
    "class_index": [k.to_bytes(8, "little") for k in range(len(CLASSES))],
    "label": _LABEL_BYTES.tolist(),
}


def row_binary_tensor(name: str, probabilities: list[float], k: int) -> bytes:
    """:func:`binary_tensor` of one row: its probabilities and class index k (the same bytes,
    without arrays)."""
    if name == "probabilities":
        return _THREE_DOUBLES.pack(*probabilities)
    return _ROW_BLOBS[name][k]


# One row's binary outputs described, written once: by class index (a label's size varies).
_ROW_DESCRIBED = {
    name: [
        _described(name, len(row_binary_tensor(name, [0.0] * len(CLASSES), k)))
        for k in range(len(CLASSES))
    ]
    for name in OUTPUTS
}


def row_binary_answer(
    version: str,
    request_id: str | None,
    names: list[str],
    as_binary: list[bool],
    *,
    probabilities: list[float],
    k: int,
) -> Answer:
    """:func:`binary_answer` of one row, its pieces written once and joined (the same bytes)."""
    outputs, blobs = [], []
    for name, binary in zip(names, as_binary, strict=True):
        if binary:
            outputs.append(_ROW_DESCRIBED[name][k])
            blobs.append(row_binary_tensor(name, probabilities, k))
        else:
            outputs.append(row_output_json(name, probabilities, k))
    named = b"" if request_id is None else b',"id":' + orjson.dumps(request_id)
    head = b'%s%s%s,"outputs":[%s]}' % (
        _ANSWER_HEAD,
        orjson.dumps(version),
        named,
        b",".join(outputs),
    )
    return binary_joined(head, blobs)


def infer_request(request: Request, body: bytes) -> bytes | Answer:
    """The handler of both infer paths: the model from the path, the body inflated, then
    split into its JSON and binary parts when Inference-Header-Content-Length says so."""
    st = state(request)
    name, version = path_model(request)
    check_model(name)
    encoding, header = "", None
    for key, value in request.scope["headers"]:  # raw, lower-case: no Headers object
        if key == _BINARY_HEADER:
            if header is not None:
                raise bad_request("Inference-Header-Content-Length is given more than once")
            header = value.decode("latin-1")
        elif key == b"content-encoding" and not encoding:  # the first, as Headers.get
            encoding = value.decode("latin-1")
    inflated_body = inflated(body, encoding, st.settings.max_body_bytes)
    json_part, binary = split_binary(inflated_body, header)
    return infer_answer(st, json_part, version, binary, request.scope["headers"])


@router.get("/v2", summary="Server metadata: name, version, extensions")
async def server_metadata() -> Response:
    return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})


@router.get("/v2/health/live", summary="Server liveness: the process answers")
async def server_live() -> Response:
    return json_response({"live": True})


@router.get(
    "/v2/health/ready",
    responses=error_responses(503),
    summary="Server readiness: a model is loaded",
)
async def server_ready(request: Request) -> Response:
    registry = state(request).registry
    if registry.active is None:
        raise ProtocolError(503, f"not ready: {registry.problem or 'no model is loaded yet'}")
    # The specification's ready object reads {"live": ...}; "ready" says what it means.
    return json_response({"live": True, "ready": True})


MODEL = "/v2/models/{model_name}"
VERSION = "/v2/models/{model_name}/versions/{model_version}"
PATHS = ((MODEL, (404, 503), "the active version"), (VERSION, (404, 409), "a stored version"))
for base, codes, whose in PATHS:
    router.add_api_route(
        base,
        endpoint_for(base, model_metadata),
        methods=["GET"],
        responses=error_responses(*codes),
        summary=f"Model metadata, for {whose}: versions, input and output tensors",
    )
    router.add_api_route(
        f"{base}/ready",
        endpoint_for(f"{base}/ready", model_ready),
        methods=["GET"],
        responses=error_responses(*codes),
        summary=f"Model readiness: {whose} is loaded",
    )


INFER_ROUTES = tuple(
    HotRoute(
        "POST",
        f"{base}/infer",
        infer_request,
        protocol_error,
        {
            "responses": error_responses(400, 413, 415, *codes),
            "openapi_extra": {"requestBody": INFER_BODY},
            "summary": f"Inference with {whose} (JSON or binary tensors)",
            "tags": router.tags,
        },
    )
    for base, codes, whose in PATHS
)


# Last, so every other /v2 route matches first: what is left gets {"error"}, not a problem.
@router.api_route(
    "/v2/{path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
@router.api_route(
    "/v2", methods=["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
)
async def unmatched(request: Request) -> Response:
    allowed = sorted(
        method
        for route in router.routes
        if isinstance(route, APIRoute)
        and route.endpoint is not unmatched
        and route.matches(request.scope)[0] is Match.PARTIAL
        for method in route.methods or ()
    )
    if allowed:
        raise ProtocolError(
            405,
            f"{request.method} is not allowed on {request.url.path}",
            {"Allow": ", ".join(allowed)},
        )
    raise ProtocolError(404, f"no endpoint at {request.url.path[:200]}")
