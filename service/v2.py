"""The Open Inference Protocol (KServe v2) REST endpoints, beside the native API.

The protocol is kserve/open-inference-protocol, ``specification/protocol/inference_rest.md``.
This server has one model, ``iris``, whose versions are the stored version ids::

    input   measurements   FP64 (FP32 accepted)  [-1, 4]   centimetres, as in /predict
    output  probabilities  FP64                  [-1, 3]   setosa, versicolor, virginica
    output  class_index    INT64                 [-1]
    output  label          BYTES                 [-1]      the species name

Every error is ``{"error": "..."}``, as the protocol asks, never a problem document: the
routes use :class:`ProtocolRoute`, which answers for them before the app's handlers could.
Bodies are parsed here whatever their Content-Type says, because tritonclient sends none.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import zlib
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.responses import Response
from starlette.routing import Match

from model.data import CLASSES, FEATURES, MAX_MEASUREMENT_CM
from model.network import N_CLASSES, N_FEATURES, FloatArray, predict_proba
from model.persistence import StoredModel
from service import metrics, problems
from service.body import Document, check_budget, check_object_sizes, load, refuse_duplicate_keys
from service.deps import State, state
from service.problems import ProblemError
from service.routes import HotRoute, json_response, run_sized
from service.schemas import Integer

log = logging.getLogger("iris.v2")

MODEL_NAME = "iris"
PLATFORM = "numpy"
SERVER_NAME = "iris-service"
try:
    SERVER_VERSION = importlib.metadata.version("iris-service")
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    SERVER_VERSION = "unknown"

INPUT = "measurements"
INPUT_DATATYPES = ("FP64", "FP32")
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "probabilities": ("FP64", [-1, N_CLASSES]),
    "class_index": ("INT64", [-1]),
    "label": ("BYTES", [-1]),
}
# The protocol's tensor datatypes; they are case-sensitive.
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
MAX_DIMENSION = 2**64 - 1  # "each dimension must be ... an unsigned 64-bit integer"
MAX_ELEMENTS = 2**63 - 1  # what a NumPy index (int64) can count
BINARY_HEADER = "inference-header-content-length"
NO_BINARY = (
    "the binary tensor data extension is not supported: send every tensor as JSON "
    "'data' (tritonclient: set_data_from_numpy(array, binary_data=False))"
)
# Tensor parameters of extensions this server does not implement: a clear 400, rather than
# an answer the client would misread.
UNSUPPORTED = {
    "binary_data_size": NO_BINARY,
    "shared_memory_region": "the shared-memory extension is not supported: send tensors as JSON",
    "classification": "the classification extension is not supported: request the "
    "'probabilities', 'class_index' and 'label' outputs instead",
}
# Content-Encoding -> zlib wbits: gzip framing, or the zlib format HTTP calls deflate.
INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class ProtocolError(Exception):
    """Raise in a /v2 route to answer ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": problems.public(message)}  # no data directory paths to clients
    return Response(orjson.dumps(body), status, headers, "application/json")


def domain_status(error: Exception) -> int | None:
    """The status the native API gives a model or store error (one table for both APIs)."""
    return next((code for kind, code in problems.DOMAIN_STATUS if isinstance(error, kind)), None)


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


def protocol_error(request: Request, error: Exception) -> Response:
    """The protocol's ``{"error": ...}`` answer for any exception a /v2 handler raised."""
    if isinstance(error, ProtocolError):
        return error_response(error.status, error.message, error.headers)
    if isinstance(error, ProblemError):  # shared checks (duplicate keys) speak native
        return error_response(error.status, error.detail, error.headers)
    status = domain_status(error)
    if status is not None:
        return error_response(status, str(error))
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal error; the server log has the details")


class ErrorResponse(BaseModel):
    """The protocol's error object."""

    error: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error objects a route may answer with."""
    described = {
        400: "a bad request; the error names the problem",
        404: "unknown model or version",
        409: "the version is stored but corrupt",
        413: "body over IRIS_MAX_BODY_BYTES",
        415: "a Content-Encoding other than gzip or deflate",
        503: "no model is loaded yet",
    }
    return {code: {"description": described[code], "model": ErrorResponse} for code in codes}


router = APIRouter(route_class=ProtocolRoute, tags=["Open Inference Protocol (v2)"])


# -- request bodies (pydantic at the edge; nothing of it leaves this module) --------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(Strict):
    name: StrictStr
    shape: list[Integer] = Field(fail_fast=True)
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(Strict):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(Strict):
    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, fail_fast=True)
    outputs: list[RequestOutput] | None = Field(None, fail_fast=True)


_MEASUREMENT = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MEASUREMENT_CM}
_EXTENSIONS = {"not": {"anyOf": [{"required": [name]} for name in UNSUPPORTED]}}
# The inference request as this server accepts it, for the OpenAPI document: tighter than
# the protocol's generic tensor (one input, named and shaped as the model needs).
REQUEST_SCHEMAS: dict[str, Any] = {
    "InferenceRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {"$ref": "#/components/schemas/InferenceInput"},
            },
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/InferenceOutput"},
            },
        },
    },
    "InferenceInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": INPUT},
            "shape": {
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 1, "maximum": MAX_ELEMENTS // N_FEATURES},
                    {"const": N_FEATURES},
                ],
                "minItems": 2,
                "maxItems": 2,
            },
            "datatype": {"enum": list(INPUT_DATATYPES)},
            "parameters": {"type": "object", **_EXTENSIONS},
            "data": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        _MEASUREMENT,
                        {
                            "type": "array",
                            "minItems": N_FEATURES,
                            "maxItems": N_FEATURES,
                            "items": _MEASUREMENT,
                        },
                    ]
                },
            },
        },
    },
    "InferenceOutput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"enum": list(OUTPUTS)},
            "parameters": {"type": "object", **_EXTENSIONS},
        },
    },
}
INFER_PATHS = (
    "/v2/models/{model_name}/infer",
    "/v2/models/{model_name}/versions/{model_version}/infer",
)


def parse(document: Document) -> InferenceRequest:
    """Validate a body that :func:`fast_request` did not vouch for; a 400 naming the problem.

    The body was bounded first, as every body is (service.body.check_budget): a body with
    more JSON than its row limit needs is refused by counting, and the request's lists stop
    at their first bad item, so a small compressed body cannot expand into millions of errors.
    """
    try:
        check_object_sizes(document.tree)
        refuse_duplicate_keys(document.body)
        return document.validate(InferenceRequest)
    except ProblemError as error:
        raise bad_request(error.detail) from None
    except ValidationError as error:
        listed = error.errors(include_url=False, include_input=False)
        first = listed[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", first["msg"])
            raise bad_request(f"the body is not valid JSON: {reason}") from None
        shown = "; ".join(f"{where(e['loc'])}: {e['msg']}" for e in listed[:3])
        more = f" (and {len(listed) - 3} more)" if len(listed) > 3 else ""
        raise bad_request(f"invalid inference request: {shown}{more}") from None


_TOP_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "data"})
_SPACED_KEY = re.compile(rb'"\s+:')


def fast_request(document: Document, limit: int) -> tuple[FloatArray, list[str], str | None] | None:
    """Measurements (n, 4), output names and id of a plain, well-formed request, or None.

    The common request (one FP64 or FP32 input of shape [n, 4], data flat or as n rows,
    optional id and named outputs, no parameters) is checked here on orjson's document with
    array operations; None means "not vouched for", and :func:`parse` with the schema then
    either names the problem or accepts an unusual request. Duplicate keys are ruled out by
    counting: without a backslash in the body every ``":`` ends a key, so the document
    holds every key written exactly when the counts agree.
    """
    tree, body = document.tree, document.body
    if not document.exact or type(tree) is not dict or not tree.keys() <= _TOP_KEYS:
        return None
    request_id = tree.get("id")
    inputs, outputs = tree.get("inputs"), tree.get("outputs")
    if (
        tree.get("parameters")
        or (request_id is not None and type(request_id) is not str)
        or type(inputs) is not list
        or len(inputs) != 1
        or type(inputs[0]) is not dict
        or inputs[0].keys() != _INPUT_KEYS
    ):
        return None
    tensor = inputs[0]
    shape, data = tensor["shape"], tensor["data"]
    if (
        tensor["name"] != INPUT
        or tensor["datatype"] not in INPUT_DATATYPES
        or type(shape) is not list
        or len(shape) != 2
        or type(shape[0]) is not int
        or type(shape[1]) is not int
        or not 1 <= shape[0] <= limit
        or shape[1] != N_FEATURES
        or type(data) is not list
    ):
        return None
    names = fast_outputs(outputs)
    if names is None:
        return None
    # Counted in the bytes, not item by item: without a backslash every '":' ends a key
    # (the document holds each key written, so none is written twice), the quotes are
    # those of the keys and the strings above (so the data holds no string), and without
    # true, false or null the data holds no boolean or null.
    keys = len(tree) + len(_INPUT_KEYS) + len(outputs or ())
    strings = 2 + (request_id is not None) + len(outputs or ())
    if (
        b"\\" in body
        or body.count(b'":') != keys
        or body.count(b'"') != 2 * (keys + strings)
        or _SPACED_KEY.search(body)
        or b"true" in body
        or b"false" in body
        or b"null" in body
    ):
        return None
    n = shape[0]
    try:
        raw = np.array(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None  # ragged, or objects in the data
    if raw.shape not in ((n, N_FEATURES), (n * N_FEATURES,)):
        return None
    raw = raw.reshape(n, N_FEATURES)
    if not ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
        return None  # NaN fails both comparisons; parse names the value
    return raw, names, request_id


def fast_outputs(outputs: Any) -> list[str] | None:
    """The names of a plain ``outputs`` list (each ``{"name": known}``, once), or None."""
    if outputs is None:
        return list(OUTPUTS)
    if type(outputs) is not list or not outputs:
        return None
    names = []
    for output in outputs:
        if type(output) is not dict or output.keys() != {"name"} or output["name"] not in OUTPUTS:
            return None
        names.append(output["name"])
    return names if len(set(names)) == len(names) else None


def where(loc: tuple[int | str, ...]) -> str:
    """``('inputs', 0, 'shape', 1)`` -> ``inputs[0].shape[1]``; the body itself is ``body``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.lstrip(".") or "body"


def inflated(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding (gzip or deflate) undone, never over ``limit``."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in INFLATE_WBITS:
        raise ProtocolError(
            415,
            f"Content-Encoding {encoding[:40]!r} is not supported: send gzip, deflate or none",
            {"Accept-Encoding": "gzip, deflate"},
        )
    inflater = zlib.decompressobj(INFLATE_WBITS[coding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise bad_request(f"the body is not valid {coding} data: {error}") from None
    if len(data) > limit:
        # The edge middleware bounds the compressed size; this bounds what it inflates to.
        raise ProtocolError(
            413, f"the {coding} body inflates to more than {limit} bytes (IRIS_MAX_BODY_BYTES)"
        )
    if not inflater.eof:
        raise bad_request(f"the {coding} body is truncated")
    return data


# -- tensors ------------------------------------------------------------------------------


def the_input(inputs: list[RequestInput]) -> RequestInput:
    """The one input the model takes; duplicates and unknown names are refused."""
    seen: set[str] = set()
    for tensor in inputs:
        if tensor.name in seen:
            raise bad_request(f"input {tensor.name[:80]!r} is given more than once")
        seen.add(tensor.name)
        if tensor.name != INPUT:
            raise bad_request(
                f"unknown input {tensor.name[:80]!r}: model {MODEL_NAME!r} takes one input, "
                f"{INPUT!r} (FP64 or FP32, shape [n, {N_FEATURES}])"
            )
    return inputs[0]


def check_datatype(datatype: str) -> None:
    if datatype in INPUT_DATATYPES:
        return
    if datatype.upper() in INPUT_DATATYPES:
        raise bad_request(
            f"input {INPUT!r}: datatype {datatype!r} is not a protocol datatype; "
            f"datatypes are case-sensitive: use {datatype.upper()!r}"
        )
    kind = "takes" if datatype in DATATYPES else "is not a protocol datatype; the input takes"
    raise bad_request(f"input {INPUT!r}: datatype {datatype[:40]!r} {kind} FP64 or FP32")


def check_shape(shape: list[int], limit: int) -> int:
    """The row count n of a shape that must be [n, 4] with 1 <= n <= ``limit``."""
    shown = f"input {INPUT!r}: shape {str(shape[:8])[:100]}"
    if len(shape) != 2:  # first: everything below is then two numbers, never a long product
        raise bad_request(
            f"{shown} has {len(shape)} dimensions, not 2: [n, {N_FEATURES}], one row per flower"
        )
    if any(dim < 0 for dim in shape):
        raise bad_request(f"{shown} has a negative dimension")
    if any(dim > MAX_DIMENSION for dim in shape):
        raise bad_request(f"{shown} overflows: a dimension exceeds 2**64 - 1")
    if math.prod(shape) > MAX_ELEMENTS:
        raise bad_request(f"{shown} overflows: more than 2**63 - 1 elements")
    if shape[1] != N_FEATURES:
        raise bad_request(f"{shown} is not [n, {N_FEATURES}]: one row of {N_FEATURES} per flower")
    n = shape[0]
    if n < 1:
        raise bad_request(f"{shown} has no rows")
    if n > limit:
        raise bad_request(f"{shown}: {n} rows, more than the limit of {limit} (IRIS_MAX_INSTANCES)")
    return n


def position(flat: int, dims: list[int]) -> str:
    """The index, as ``[i][j]``, of element ``flat`` in row-major order of ``dims``."""
    index: list[int] = []
    for size in reversed(dims):
        flat, i = divmod(flat, size)
        index.append(i)
    return "".join(f"[{i}]" for i in reversed(index))


def data_shape(data: list[Any]) -> list[int]:
    """The dimensions of ``data``: nested lists, equally long at each depth, of numbers.

    Booleans and strings are not numbers; the error names the first element that breaks a rule.
    """
    dims: list[int] = []
    level: list[Any] = [data]
    while True:
        lengths = sorted({len(node) for node in level})
        if len(lengths) > 1:
            raise bad_request(
                f"input {INPUT!r}: data is ragged: arrays at depth {len(dims) + 1} have "
                f"{lengths[0]} and {lengths[-1]} elements"
            )
        dims.append(lengths[0])
        items = [item for node in level for item in node]
        nested = sum(type(item) is list for item in items)
        if items and nested == len(items):
            level = items
            continue
        if nested:
            raise bad_request(
                f"input {INPUT!r}: data is ragged: it mixes arrays and numbers at depth "
                f"{len(dims) + 1}"
            )
        for flat, item in enumerate(items):
            if type(item) not in (int, float):  # exactly: bool is a subclass of int
                raise bad_request(
                    f"input {INPUT!r}: data{position(flat, dims)} is {item!r:.40}, not a number"
                )
        return dims


def measurements(tensor: RequestInput, limit: int) -> FloatArray:
    """The raw measurements (n, 4) in centimetres, under the same rules as /predict."""
    check_datatype(tensor.datatype)
    refuse_extensions(tensor.parameters)
    n = check_shape(tensor.shape, limit)
    if tensor.data is None:
        raise bad_request(f"input {INPUT!r} has no 'data'")
    dims = data_shape(tensor.data)
    if math.prod(dims) != n * N_FEATURES:
        raise bad_request(
            f"input {INPUT!r}: shape {tensor.shape} holds {n * N_FEATURES} values, "
            f"data has {math.prod(dims)}"
        )
    if dims not in (tensor.shape, [n * N_FEATURES]):
        raise bad_request(
            f"input {INPUT!r}: data is nested as {dims}; send it as the shape {tensor.shape} "
            "or flat, in row-major order"
        )
    try:
        # FP32 data arrives as JSON numbers too: computing in float64 loses nothing.
        raw = np.array(tensor.data, dtype=np.float64).reshape(n, N_FEATURES)
    except OverflowError:
        raise bad_request(f"input {INPUT!r}: data holds an integer too large for FP64") from None
    valid = np.isfinite(raw) & (raw > 0) & (raw <= MAX_MEASUREMENT_CM)
    if not valid.all():
        row, column = (int(i) for i in np.argwhere(~valid)[0])
        value = float(raw[row, column])
        reason = (
            "is not finite"
            if not math.isfinite(value)
            else f"cm is outside (0, {MAX_MEASUREMENT_CM:g}]"
        )
        raise bad_request(f"input {INPUT!r}, row {row}, {FEATURES[column]}: {value!r} {reason}")
    return raw


def refuse_extensions(parameters: dict[str, Any] | None) -> None:
    for name, message in UNSUPPORTED.items():
        if parameters and name in parameters:
            raise bad_request(message)


def output_names(requested: list[RequestOutput] | None) -> list[str]:
    """The outputs to answer, in the order asked; all of them when none are named."""
    if not requested:
        return list(OUTPUTS)
    names: list[str] = []
    for output in requested:
        refuse_extensions(output.parameters)
        if output.name not in OUTPUTS:
            raise bad_request(
                f"unknown output {output.name[:80]!r}: model {MODEL_NAME!r} has outputs "
                f"{', '.join(OUTPUTS)}"
            )
        if output.name in names:
            raise bad_request(f"output {output.name!r} is requested more than once")
        names.append(output.name)
    return names


def tensor(name: str, n: int, data: Any) -> dict[str, Any]:
    datatype, shape = OUTPUTS[name]
    return {"name": name, "datatype": datatype, "shape": [n, *shape[1:]], "data": data}


# -- models -------------------------------------------------------------------------------


def check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise ProtocolError(
            404, f"unknown model {name[:80]!r}: this server serves one model, {MODEL_NAME!r}"
        )


def served(request: Request, name: str, version: str | None) -> StoredModel:
    """The active model, or a stored version: 404 unknown, 409 corrupt, 503 not ready."""
    check_model(name)
    return state(request).registry.get(version)


def model_metadata(request: Request, name: str, version: str | None) -> Response:
    check_model(name)
    if version is not None:
        served(request, name, version)
    return json_response(
        {
            "name": MODEL_NAME,
            "versions": state(request).store.versions(),
            "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": "FP64", "shape": [-1, N_FEATURES]}],
            "outputs": [
                {"name": name, "datatype": datatype, "shape": shape}
                for name, (datatype, shape) in OUTPUTS.items()
            ],
        }
    )


def model_ready(request: Request, name: str, version: str | None) -> Response:
    served(request, name, version)
    return json_response({"name": MODEL_NAME, "ready": True})


def infer_answer(st: State, body: bytes, version: str | None) -> bytes:
    """The JSON answer to an inference request body (already inflated)."""
    limit = st.settings.max_instances
    try:
        check_budget(body, limit, "IRIS_MAX_INSTANCES")
    except ProblemError as error:
        raise bad_request(error.detail) from None
    document = load(body)
    fast = fast_request(document, limit)
    if fast is not None:
        raw, names, request_id = fast
    else:
        request = parse(document)
        raw = measurements(the_input(request.inputs), limit)
        names, request_id = output_names(request.outputs), request.id
    stored = st.registry.get(version)
    o_s = predict_proba(stored.model, raw)
    index = o_s.argmax(axis=1)
    metrics.count_predictions(index)
    n = raw.shape[0]
    # Response data is flat, row-major, as the protocol writes it.
    data = {
        "probabilities": o_s.ravel(),
        "class_index": index.astype(np.int64),
        "label": [CLASSES[k] for k in index.tolist()],
    }
    answer: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": stored.version}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = [tensor(name, n, data[name]) for name in names]
    return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def infer_request(request: Request, body: bytes) -> bytes:
    """The body handler of the infer routes, versioned or not, as the edge calls it."""
    st = state(request)
    name, _, rest = request.url.path.removeprefix("/v2/models/").partition("/")
    version = rest.removeprefix("versions/").removesuffix("/infer") if rest != "infer" else None
    served(request, name, version)
    if BINARY_HEADER in request.headers:
        raise bad_request(NO_BINARY)
    inflated_body = inflated(
        body, request.headers.get("content-encoding", ""), st.settings.max_body_bytes
    )
    return infer_answer(st, inflated_body, version)


async def infer(request: Request, name: str, version: str | None) -> Response:
    # Served by the app's edge (HOT_ROUTES) for the model's name; kept for the OpenAPI
    # document and for an app mounted without that middleware.
    content = await run_sized(infer_request, request, await request.body())
    return Response(content, media_type="application/json")


# -- routes -------------------------------------------------------------------------------


@router.get("/v2", summary="Server metadata: name, version, extensions")
async def server_metadata() -> Response:
    return json_response({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []})


@router.get("/v2/health/live", summary="Server liveness: the process answers")
async def server_live() -> Response:
    return json_response({"live": True})


@router.get(
    "/v2/health/ready", responses=errors(503), summary="Server readiness: a model is loaded"
)
async def server_ready(request: Request) -> Response:
    registry = state(request).registry
    if registry.active is None:
        raise ProtocolError(503, f"not ready: {registry.problem or 'no model is loaded yet'}")
    # The specification's ready object reads {"live": ...}; "ready" says what it means.
    return json_response({"live": True, "ready": True})


@router.get(
    "/v2/models/{model_name}",
    responses=errors(404),
    summary="Model metadata: versions, input and output tensors",
)
def get_model_metadata(request: Request, model_name: str) -> Response:
    return model_metadata(request, model_name, None)


@router.get(
    "/v2/models/{model_name}/versions/{model_version}",
    responses=errors(404, 409),
    summary="Model metadata, for a stored version",
)
def get_version_metadata(request: Request, model_name: str, model_version: str) -> Response:
    return model_metadata(request, model_name, model_version)


@router.get(
    "/v2/models/{model_name}/ready",
    responses=errors(404, 503),
    summary="Model readiness: the active version is loaded",
)
def get_model_ready(request: Request, model_name: str) -> Response:
    return model_ready(request, model_name, None)


@router.get(
    "/v2/models/{model_name}/versions/{model_version}/ready",
    responses=errors(404, 409),
    summary="Model readiness, for a stored version",
)
def get_version_ready(request: Request, model_name: str, model_version: str) -> Response:
    return model_ready(request, model_name, model_version)


@router.post(
    "/v2/models/{model_name}/infer",
    responses=errors(400, 404, 409, 413, 415, 503),
    summary="Inference with the active version (JSON tensors)",
)
async def post_infer(request: Request, model_name: str) -> Response:
    return await infer(request, model_name, None)


@router.post(
    "/v2/models/{model_name}/versions/{model_version}/infer",
    responses=errors(400, 404, 409, 413, 415, 503),
    summary="Inference with a stored version (JSON tensors)",
)
async def post_version_infer(request: Request, model_name: str, model_version: str) -> Response:
    return await infer(request, model_name, model_version)


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


# The infer routes, answered by the app's edge before FastAPI's routing.
HOT_ROUTES = {
    ("POST", path.replace("{model_name}", MODEL_NAME)): HotRoute(infer_request, protocol_error)
    for path in INFER_PATHS
}
