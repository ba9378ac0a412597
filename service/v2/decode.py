"""The Open Inference Protocol's request: bytes to typed rows, or a 400 that names the problem.

msgspec decodes the body into the request's structs (service/v2/schema.py: field names and
types, unknown fields refused), with each input's ``data`` left as its bytes. The values the
model needs are then checked by the functions below (one input, its name, datatype and
shape; the outputs asked for), and the data read (:func:`tensor_data`): many rows straight
into float64 by simdjson, a few by msgspec as Python floats, and any data that is not a
plain array of numbers of the declared shape by :func:`tensor_rows`, which names the first
element that breaks a rule.
Every failure is a :class:`~service.v2.errors.ProtocolError` (400 unless it says otherwise).
"""

from __future__ import annotations

import math
import re
import sys
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec
import numpy as np

from model.data import FEATURES, MAX_MEASUREMENT_CM
from model.network import N_FEATURES, FloatArray
from service import inference
from service.body import (
    Measurement,
    Rows,
    check_budget,
    json_numbers,
    occurrences,
    quotes_agree,
    refuse_duplicate_keys,
    strings_in,
)
from service.v2.errors import ProtocolError, bad_request
from service.v2.protocol import (
    DATATYPES,
    ELEMENT_BYTES,
    INFLATE_WBITS,
    INPUT,
    INPUT_DATATYPES,
    MAX_DIMENSION,
    MAX_ELEMENTS,
    MODEL_NAME,
    OUTPUTS,
    UNSUPPORTED,
)
from service.v2.schema import (
    PARAMETERS_BYTES,
    UNSET,
    InferenceInput,
    InferenceOutput,
    InferenceRequest,
)

LITTLE_ENDIAN = sys.byteorder == "little"  # the binary extension's order is this machine's
UNCOUNTED_BODY_BYTES = 512
"""A body up to this size is decoded with no count first: it cannot build much."""
SPARE_COMMAS = 64
"""Commas past twice a shape's values that data may hold before it is read, to be named."""
FEW_ROWS = 8
"""Data of up to this many rows is read as Python numbers; more, straight into float64."""
_NUMBER_BYTES = b"0123456789.eE+- \t\r\n"  # with commas and brackets, what plain data is made of
_decoder = msgspec.json.Decoder(InferenceRequest)
_parameters = msgspec.json.Decoder(dict[str, Any] | None)


class Asked(NamedTuple):
    """What an inference request asks: measurements (n, 4) in centimetres, the outputs to
    answer in order, whether each is answered in binary, and the request's id."""

    rows: Rows
    outputs: list[str]
    binary: list[bool]
    id: str | None


def split_binary(body: bytes, header: str | None) -> tuple[bytes, memoryview | None]:
    """The JSON of a request and, when ``header`` (Inference-Header-Content-Length) is
    given, the binary tensor data after it (a view: nothing is copied)."""
    if header is None:
        return body, None
    text = header.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise bad_request(
            f"Inference-Header-Content-Length {header[:40]!r} is not a byte count "
            "(a non-negative integer)"
        )
    size = int(text)
    if size > len(body):
        raise bad_request(
            f"Inference-Header-Content-Length {size} is past the end of the body "
            f"({len(body)} bytes)"
        )
    return body[:size], memoryview(body)[size:]


class BinaryInput(NamedTuple):
    """How an input sent in binary is read: its datatype, rows and byte size."""

    datatype: str
    n: int
    size: int


def request_input(body: bytes, limit: int, binary: memoryview | None = None) -> Asked:
    """The rows, outputs and id of an inference request body (inflated), or its 400
    (:func:`read_request`)."""
    return read_request(body, limit, binary)[0]


def read_request(
    body: bytes, limit: int, binary: memoryview | None = None
) -> tuple[Asked, BinaryInput | None]:
    """The rows, outputs and id of an inference request body (inflated), or its 400; and,
    when its input came in binary, how it was read (the rest depends on ``body`` alone).

    ``body`` is the request's JSON; ``binary``, the bytes after it when the request used
    the binary tensor data extension (:func:`split_binary`).

    What decoding builds is bounded before it starts: a body longer than
    UNCOUNTED_BODY_BYTES is counted first (service.body.check_budget: no more objects,
    arrays and values than ``limit`` rows need); the data and every ``parameters`` are kept
    as bytes, parameters read only when at most PARAMETERS_BYTES; a shape is two numbers. A
    shape of more rows than ``limit`` (IRIS_MAX_INSTANCES) is refused before its data is
    read, and data whose commas cannot make the shape's values before it is decoded.
    """
    if len(body) > UNCOUNTED_BODY_BYTES:
        check_budget(body, limit, "IRIS_MAX_INSTANCES")  # a 422, answered as a 400
    request = decode(body)
    tensor = the_input(request.inputs)
    outputs = request.outputs if type(request.outputs) is list else []
    # Every key and string once: the request's, the input's (4 keys, name, datatype), the
    # outputs' (a key, a name), the parameters' (each read only when present).
    strings = 7 + (request.outputs is not UNSET) + (type(request.id) is str) * 2
    if request.id is None:
        strings += 1
    if tensor.data is UNSET:  # its data in binary: no "data" key
        strings -= 1
    top = own = None
    if request.parameters is not UNSET:
        top = read_parameters(request.parameters, "parameters")
        strings += 1 + strings_in(top)
    if tensor.parameters is not UNSET:
        own = read_parameters(tensor.parameters, "inputs[0].parameters")
        strings += 1 + strings_in(own)
    asked: list[dict[str, Any] | None] = []
    for i, output in enumerate(outputs):
        strings += 2
        if output.parameters is UNSET:
            asked.append(None)
            continue
        asked.append(read_parameters(output.parameters, f"outputs[{i}].parameters"))
        strings += 1 + strings_in(asked[-1])
    if not quotes_agree(body, strings):
        refuse_duplicate_keys(body)
    check_datatype(tensor.datatype)
    refuse_extensions(own)
    n = check_shape(tensor.shape, limit)
    size = binary_size(own)
    if size is not None:
        if tensor.data is not UNSET:
            raise bad_request(
                f"input {INPUT!r} is given both ways: as 'data' and as binary_data_size; send one"
            )
        rows = binary_rows(binary, size, tensor.datatype, n)
    elif binary is not None and len(binary):
        raise bad_request(
            f"{len(binary)} bytes follow the JSON (Inference-Header-Content-Length), but no "
            "input declares parameters.binary_data_size"
        )
    elif tensor.data is UNSET:
        raise bad_request(
            f"input {INPUT!r} has no data: give 'data', or parameters.binary_data_size with "
            "the binary data after the JSON (Inference-Header-Content-Length)"
        )
    else:
        rows = tensor_data(bytes(tensor.data), n)
    request_id = request.id if type(request.id) is str else None
    names = output_names(outputs, asked)
    found = Asked(rows, names, binary_outputs(top, outputs, asked, names), request_id)
    return found, None if size is None else BinaryInput(tensor.datatype, n, size)


def flag(parameters: dict[str, Any] | None, name: str, where: str) -> bool | None:
    """A boolean parameter (None when absent); any other value is a 400 naming it."""
    if not parameters or name not in parameters:
        return None
    value = parameters[name]
    if type(value) is not bool:
        raise bad_request(f"{where}.{name} is {value!r:.40}, not true or false")
    return value


def binary_outputs(
    top: dict[str, Any] | None,
    requested: list[InferenceOutput],
    parameters: list[dict[str, Any] | None],
    names: list[str],
) -> list[bool]:
    """Whether each output is answered in binary: an output's own ``binary_data`` when it
    says, else the request's ``binary_data_output`` (default false)."""
    default = bool(flag(top, "binary_data_output", "parameters"))
    if not requested:
        return [default] * len(names)
    return [
        default if (own := flag(asked, "binary_data", f"outputs[{i}].parameters")) is None else own
        for i, asked in enumerate(parameters)
    ]


def binary_size(parameters: dict[str, Any] | None) -> int | None:
    """An input's binary_data_size (None when absent): a non-negative integer."""
    if not parameters or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise bad_request(
            f"inputs[0].parameters.binary_data_size is {size!r:.40}, not a byte count"
        )
    return size


def binary_rows(
    binary: memoryview | None, size: int, datatype: str, n: int, what: str = "binary_data_size"
) -> Rows:
    """The measurements (n, 4) of an input sent in binary: ``size`` bytes (as ``what`` says)
    of little-endian FP64 or FP32, row-major. Sizes are checked before any value is read,
    and the values under the same rules as JSON data (the first bad element named); nothing
    is copied until they pass."""
    if binary is None:
        raise bad_request(
            "inputs[0].parameters.binary_data_size needs the binary tensor data extension: "
            "the Inference-Header-Content-Length header giving the JSON's length"
        )
    width = ELEMENT_BYTES[datatype]
    if size % width:
        raise bad_request(
            f"input {INPUT!r}: {what} {size} is not a multiple of {datatype}'s {width} bytes"
        )
    if size != n * N_FEATURES * width:
        raise bad_request(
            f"input {INPUT!r}: shape [{n}, {N_FEATURES}] of {datatype} is "
            f"{n * N_FEATURES * width} bytes; {what} is {size}"
        )
    if len(binary) != size:
        raise bad_request(
            f"{len(binary)} bytes follow the JSON (Inference-Header-Content-Length); the "
            f"inputs declare {size} (binary_data_size)"
        )
    if n <= FEW_ROWS and LITTLE_ENDIAN:  # a few values: as Python floats, no array
        values = binary.cast("d" if width == 8 else "f").tolist()
        if all(0 < value <= MAX_MEASUREMENT_CM for value in values):
            return [values[i : i + N_FEATURES] for i in range(0, len(values), N_FEATURES)]
    raw = np.frombuffer(binary, dtype="<f8" if width == 8 else "<f4").reshape(n, N_FEATURES)
    check_measurements(raw)
    rows = raw.astype(np.float64)  # native order, a copy the model may keep
    return [rows[0].tolist()] if n == 1 else rows


def decode(body: bytes) -> InferenceRequest:
    """The request's structs; a 400 naming the first problem (a key written twice first:
    it may be why the struct read the wrong value)."""
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as error:  # (a DecodeError too: first)
        refuse_duplicate_keys(body)
        raise bad_request(f"invalid inference request: {named(error)}") from None
    except msgspec.DecodeError as error:
        raise bad_request(f"the body is not valid JSON: {malformed(error, body)}") from None
    except RecursionError:
        raise bad_request(TOO_DEEP) from None


TOO_DEEP = "the body nests arrays or objects too deeply to be an inference request"


def read_parameters(raw: msgspec.Raw, where: str) -> dict[str, Any] | None:
    """A ``parameters`` object (None when null), read only when small."""
    if len(raw) > PARAMETERS_BYTES:
        raise bad_request(f"{where}: more than {PARAMETERS_BYTES} bytes; parameters are a few")
    try:
        return _parameters.decode(raw)
    except msgspec.DecodeError as error:  # (the body was valid JSON: a ValidationError)
        raise bad_request(f"invalid inference request: {named(error, where)}") from None


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
    if path.endswith(".shape") and text.startswith("Expected `array` of length"):
        return f"{path}: {text}: [n, {N_FEATURES}], one row of {N_FEATURES} per flower"
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


def tensor_data(data: bytes, n: int) -> Rows:
    """The measurements (n, 4) of an input's ``data``: many rows written as plain numbers,
    flat or as rows of four, straight into float64 by simdjson; a few rows by msgspec as
    Python floats; anything else by :func:`tensor_rows`, which names the first problem."""
    # Either layout, [,,,...] or [[,,,],...], has 4n - 1 commas: data with far more values
    # than its shape is refused before they are read (a small error is named below).
    if (commas := occurrences(data, b",")) > 2 * N_FEATURES * n + SPARE_COMMAS:
        raise bad_request(
            f"input {INPUT!r}: shape [{n}, {N_FEATURES}] holds {n * N_FEATURES} values, "
            f"data has more than {commas // 2} (it has {commas} commas)"
        )
    if n > FEW_ROWS:
        flat = json_numbers(data)
        if flat is not None and len(flat) != n * N_FEATURES:  # before any Python object
            raise bad_request(
                f"input {INPUT!r}: shape [{n}, {N_FEATURES}] holds {n * N_FEATURES} values, "
                f"data has {len(flat)}"
            )
        if flat is not None and plain(data, n):
            raw = flat.reshape(n, N_FEATURES)
            if ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
                return raw
    else:
        try:
            if data[1:].lstrip()[:1] == b"[":
                rows: list[Sequence[float]] = list(_few_rows.decode(data))
            else:
                values = _few_values.decode(data)
                rows = [values[i : i + N_FEATURES] for i in range(0, len(values), N_FEATURES)]
        except msgspec.DecodeError:
            pass
        else:
            if len(rows) == n and all(len(row) == N_FEATURES for row in rows):
                return rows
    try:
        values = msgspec.json.decode(data)
    except RecursionError:
        raise bad_request(TOO_DEEP) from None
    except msgspec.DecodeError as error:  # a number out of range: only its value was read
        raise bad_request(f"input {INPUT!r}: {named(error, 'inputs[0].data')}") from None
    raw = tensor_rows(values, n)
    return [raw[0].tolist()] if n == 1 else raw


_few_values = msgspec.json.Decoder(list[Measurement])
_few_rows = msgspec.json.Decoder(list[tuple[Measurement, Measurement, Measurement, Measurement]])


def plain(data: bytes, n: int) -> bool:
    """Whether ``data``, once simdjson has found it an array of 4n numbers, holds them flat
    (``[...]``, one bracket each way) or as n rows of four (``[[,,,],...]`` once numbers and
    white space are taken out)."""
    if occurrences(data, b"[") == 1:  # flat: nothing nests (and simdjson counted 4n numbers)
        return True
    return data.translate(None, _NUMBER_BYTES) == b"[" + (_ROW * n)[:-1] + b"]"


_ROW = b"[" + b"," * (N_FEATURES - 1) + b"],"


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


def check_shape(shape: tuple[int | float, int | float], limit: int) -> int:
    """The row count n of a shape that must be [n, 4] with 1 <= n <= ``limit``."""
    n, width = shape
    if not (type(n) is int and 1 <= n <= MAX_ELEMENTS // N_FEATURES and width == N_FEATURES):
        shown = f"input {INPUT!r}: shape {list(shape)}"
        for i, dim in enumerate(shape):
            if not float(dim).is_integer():
                raise bad_request(f"{shown}: inputs[0].shape[{i}] is {dim!r}, not an integer")
        n, width = int(n), int(width)
        if n < 0 or width < 0:
            raise bad_request(f"{shown} has a negative dimension")
        if n > MAX_DIMENSION or width > MAX_DIMENSION:
            raise bad_request(f"{shown} overflows: a dimension exceeds 2**64 - 1")
        if n * width > MAX_ELEMENTS:
            raise bad_request(f"{shown} overflows: more than 2**63 - 1 elements")
        if width != N_FEATURES:
            raise bad_request(
                f"{shown} is not [n, {N_FEATURES}]: one row of {N_FEATURES} per flower"
            )
        if n < 1:
            raise bad_request(f"{shown} has no rows")
    inference.check_rows(n, limit)  # before the data is read
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


def tensor_rows(data: Any, n: int) -> FloatArray:
    """The measurements (n, 4) in centimetres of an input's decoded ``data``, under the same
    rules as /predict: the first element that breaks one is named."""
    if data is None:
        raise bad_request(f"input {INPUT!r} has no 'data'")
    if type(data) is not list:
        raise bad_request(f"input {INPUT!r}: inputs[0].data is {data!r:.40}, not an array")
    dims = data_shape(data)
    if math.prod(dims) != n * N_FEATURES:
        raise bad_request(
            f"input {INPUT!r}: shape [{n}, {N_FEATURES}] holds {n * N_FEATURES} values, "
            f"data has {math.prod(dims)}"
        )
    if dims not in ([n, N_FEATURES], [n * N_FEATURES]):
        raise bad_request(
            f"input {INPUT!r}: data is nested as {dims}; send it as the shape [{n}, {N_FEATURES}] "
            "or flat, in row-major order"
        )
    try:
        # FP32 data arrives as JSON numbers too: computing in float64 loses nothing.
        raw = np.array(data, dtype=np.float64).reshape(n, N_FEATURES)
    except OverflowError:
        raise bad_request(f"input {INPUT!r}: data holds an integer too large for FP64") from None
    check_measurements(raw)
    return raw


def check_measurements(raw: np.ndarray[Any, Any]) -> None:
    """Measurements (n, 4) under the /predict rules: finite, in (0, 100] cm; a 400 names the
    first element that breaks one (NaN compares false, so it is refused too)."""
    valid = (raw > 0) & (raw <= MAX_MEASUREMENT_CM)
    if valid.all():
        return
    row, column = (int(i) for i in np.argwhere(~valid)[0])
    value = float(raw[row, column])
    reason = (
        "is not finite"
        if not math.isfinite(value)
        else f"cm is outside (0, {MAX_MEASUREMENT_CM:g}]"
    )
    raise bad_request(f"input {INPUT!r}, row {row}, {FEATURES[column]}: {value!r} {reason}")


class Named(Protocol):
    """A requested output as either transport gives it (a struct, a protobuf message)."""

    name: str


def refuse_extensions(parameters: Mapping[str, Any] | None) -> None:
    for name, message in UNSUPPORTED.items():
        if parameters and name in parameters:
            raise bad_request(message)


def output_names(
    requested: Sequence[Named], parameters: Sequence[Mapping[str, Any] | None]
) -> list[str]:
    """The outputs to answer, in the order asked; all of them when none are named."""
    if not requested:
        return list(OUTPUTS)
    if len(requested) > len(OUTPUTS):  # refused before any is read
        raise bad_request(
            f"{len(requested)} outputs requested; model {MODEL_NAME!r} has "
            f"{len(OUTPUTS)}: {', '.join(OUTPUTS)}"
        )
    names: list[str] = []
    for output, own in zip(requested, parameters, strict=True):
        refuse_extensions(own)
        if output.name not in OUTPUTS:
            raise bad_request(
                f"unknown output {output.name[:80]!r}: model {MODEL_NAME!r} has outputs "
                f"{', '.join(OUTPUTS)}"
            )
        if output.name in names:
            raise bad_request(f"output {output.name!r} is requested more than once")
        names.append(output.name)
    return names
