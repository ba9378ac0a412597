"""The Open Inference Protocol's request: bytes to typed rows, or a 400 that names the problem.

msgspec decodes the body into the request's structs (service/v2/schema.py: field names and
types, unknown fields refused), with each input's ``data`` left as its bytes. The values the
model needs are then checked by the functions below (one input, its name, datatype and
shape; the outputs asked for), and the data read: many rows straight into float64 by
simdjson (:func:`tensor_data`), a few, or any data that is not a plain array of numbers of
the declared shape, by :func:`tensor_rows`, which names the first element that breaks a rule.
Every failure is a :class:`~service.v2.errors.ProtocolError` (400 unless it says otherwise).
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any, NamedTuple

import msgspec
import numpy as np

from model.data import FEATURES, MAX_MEASUREMENT_CM
from model.network import N_FEATURES, FloatArray
from service import inference
from service.body import Rows, check_budget, duplicate_key, json_numbers, quotes_agree, strings_in
from service.errors import ProblemError
from service.v2.errors import ProtocolError, bad_request
from service.v2.protocol import (
    DATATYPES,
    INFLATE_WBITS,
    INPUT,
    INPUT_DATATYPES,
    MAX_DIMENSION,
    MAX_ELEMENTS,
    MODEL_NAME,
    OUTPUTS,
    UNSUPPORTED,
)
from service.v2.schema import UNSET, InferenceInput, InferenceOutput, InferenceRequest

SMALL_BODY_BYTES = 512
"""A body up to this size is decoded with no count first: it cannot build much."""
FEW_ROWS = 8
"""Data of up to this many rows is read as Python numbers; more, straight into float64."""
_NUMBER_BYTES = b"0123456789.eE+- \t\r\n"  # with commas and brackets, what plain data is made of
_decoder = msgspec.json.Decoder(InferenceRequest)


class InferInput(NamedTuple):
    """What an inference request asks: measurements (n, 4) in centimetres, the outputs to
    answer in order, and the request's id."""

    rows: Rows
    outputs: list[str]
    id: str | None


def request_input(body: bytes, limit: int) -> InferInput:
    """The rows, outputs and id of an inference request body (inflated), or its 400.

    ``limit`` (IRIS_MAX_INSTANCES) bounds what decoding may build: a body longer than
    SMALL_BODY_BYTES is counted first (service.body.check_budget), and a shape of more rows
    is refused before its data is read.
    """
    if len(body) > SMALL_BODY_BYTES:
        try:
            check_budget(body, limit, "IRIS_MAX_INSTANCES")
        except ProblemError as error:
            raise bad_request(error.detail) from None
    request = decode(body)
    tensor = the_input(request.inputs)
    check_datatype(tensor.datatype)
    refuse_extensions(tensor.parameters)
    n = check_shape(tensor.shape, limit)
    rows = tensor_data(bytes(tensor.data), n, tensor.shape)
    request_id = request.id if request.id is not UNSET else None
    return InferInput(rows, output_names(request.outputs), request_id)


def decode(body: bytes) -> InferenceRequest:
    """The request's structs, every key written once; a 400 naming the first problem (a key
    written twice first: it is why the struct may have read the wrong value)."""
    try:
        request = _decoder.decode(body)
    except msgspec.ValidationError as error:  # (a DecodeError too: first)
        refuse_duplicates(body)
        raise bad_request(f"invalid inference request: {named(error)}") from None
    except msgspec.DecodeError as error:
        raise bad_request(f"the body is not valid JSON: {malformed(error, body)}") from None
    if not quotes_agree(body, request_strings(request)):
        refuse_duplicates(body)
    return request


_AT = re.compile(r"(.*?)(?: - at `\$(.*)`)?", re.S)
_BYTE = re.compile(r"\(byte (\d+)\)$")


def named(error: msgspec.DecodeError, root: str = "") -> str:
    """msgspec's message with its JSON path first, as ``inputs[0].shape[0]: ...``."""
    found = _AT.fullmatch(str(error))
    assert found is not None  # the pattern matches any text
    text, path = found.group(1), (root + (found.group(2) or "")).lstrip(".") or "body"
    if field := re.fullmatch(r"Object missing required field `(.+)`", text):
        return f"{path}.{field.group(1)}: a required field is missing"
    if field := re.fullmatch(r"Object contains unknown field `(.+)`", text):
        return f"{path}.{field.group(1)}: not a field of the request"
    return f"{path}: {text}"


def malformed(error: msgspec.DecodeError, body: bytes) -> str:
    """msgspec's message, with the text around the byte it names."""
    if not body.strip():
        return "the body is empty"
    at = _BYTE.search(str(error))
    if at is None:
        return str(error)
    start = int(at.group(1))
    near = body[max(start - 12, 0) : start + 12].decode("utf-8", "replace")
    return f"{error}, near {near!r}"


def refuse_duplicates(body: bytes) -> None:
    if (key := duplicate_key(body)) is not None:
        raise bad_request(f"duplicate key {key[:80]!r} in a JSON object of the body")


def request_strings(request: InferenceRequest) -> int:
    """The keys and string values of a decoded request, its data's aside (numbers)."""
    count = 1 + present(request.id, request.parameters, request.outputs)
    count += type(request.id) is str
    count += optional_strings(request.parameters)
    for tensor in request.inputs:
        count += 6 + present(tensor.parameters)  # name, shape, datatype, data, 2 values
        count += optional_strings(tensor.parameters)
    if type(request.outputs) is list:
        for output in request.outputs:
            count += 2 + present(output.parameters) + optional_strings(output.parameters)
    return count


def present(*fields: Any) -> int:
    return sum(field is not UNSET for field in fields)


def optional_strings(value: Any) -> int:
    return strings_in(value) if value is not UNSET else 0


def tensor_data(data: bytes, n: int, shape: list[int | float]) -> Rows:
    """The measurements (n, 4) of an input's ``data``: many rows written as plain numbers,
    flat or as rows of four, straight into float64; anything else by :func:`tensor_rows`."""
    if n > FEW_ROWS:
        skeleton = data.translate(None, _NUMBER_BYTES)
        if skeleton in (b"[" + b"," * (N_FEATURES * n - 1) + b"]", _rows_skeleton(n)):
            flat = json_numbers(data)
            if flat is not None and len(flat) == n * N_FEATURES:
                raw = flat.reshape(n, N_FEATURES)
                if ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
                    return raw
    try:
        values = msgspec.json.decode(data)
    except msgspec.DecodeError as error:  # a number out of range: only its value was read
        raise bad_request(f"input {INPUT!r}: {named(error, 'inputs[0].data')}") from None
    raw = tensor_rows(values, n, shape)
    return [raw[0].tolist()] if n == 1 else raw


def _rows_skeleton(n: int) -> bytes:
    row = b"[" + b"," * (N_FEATURES - 1) + b"]"
    return b"[" + b",".join([row] * n) + b"]"


def inflated(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding (gzip or deflate) undone, never over ``limit``.

    The body is exactly one gzip member or one zlib stream: bytes after it (a second member,
    padding, garbage) are refused rather than dropped or read on, so what is parsed is all
    that was sent, read the one way every reader agrees on.
    """
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
    if inflater.unused_data:
        unit = "gzip member" if coding == "gzip" else "zlib stream"
        raise bad_request(
            f"Content-Encoding {coding}: the body must be one {unit}; "
            f"{len(inflater.unused_data)} bytes follow it"
        )
    return data


def the_input(inputs: list[InferenceInput]) -> InferenceInput:
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


def check_shape(written: list[int | float], limit: int) -> int:
    """The row count n of a shape that must be [n, 4] with 1 <= n <= ``limit``."""
    shown = f"input {INPUT!r}: shape {str(written[:8])[:100]}"
    shape = integers(written, shown)
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
    inference.check_rows(n, limit)  # before the data is read
    return n


def integers(shape: list[int | float], shown: str) -> list[int]:
    """The shape's dimensions as integers: JSON Schema counts 2.0 as one, 2.5 is not."""
    if all(type(dim) is int for dim in shape):
        return shape  # type: ignore[return-value]
    for i, dim in enumerate(shape):
        if not float(dim).is_integer():
            raise bad_request(f"{shown}: inputs[0].shape[{i}] is {dim!r}, not an integer")
    return [int(dim) for dim in shape]


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


def tensor_rows(data: Any, n: int, shape: list[int | float]) -> FloatArray:
    """The measurements (n, 4) in centimetres of an input's decoded ``data``, under the same
    rules as /predict: the first element that breaks one is named."""
    if data is None:
        raise bad_request(f"input {INPUT!r} has no 'data'")
    if type(data) is not list:
        raise bad_request(f"input {INPUT!r}: inputs[0].data is {data!r:.40}, not an array")
    dims = data_shape(data)
    if math.prod(dims) != n * N_FEATURES:
        raise bad_request(
            f"input {INPUT!r}: shape {shape} holds {n * N_FEATURES} values, "
            f"data has {math.prod(dims)}"
        )
    if dims not in ([n, N_FEATURES], [n * N_FEATURES]):
        raise bad_request(
            f"input {INPUT!r}: data is nested as {dims}; send it as the shape {shape} "
            "or flat, in row-major order"
        )
    try:
        # FP32 data arrives as JSON numbers too: computing in float64 loses nothing.
        raw = np.array(data, dtype=np.float64).reshape(n, N_FEATURES)
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


def refuse_extensions(parameters: dict[str, Any] | msgspec.UnsetType | None) -> None:
    for name, message in UNSUPPORTED.items():
        if parameters and name in parameters:
            raise bad_request(message)


def output_names(requested: list[InferenceOutput] | msgspec.UnsetType | None) -> list[str]:
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
