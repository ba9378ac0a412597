"""The inference request, checked without HTTP: parse, the input tensor, the outputs asked for.

:func:`fast_request` vouches for the common request with array operations; anything else
goes through :func:`parse` (the schema) and :func:`tensor_rows`, which name the problem. Every
failure is a :class:`~service.v2.errors.ProtocolError` (400 unless it says otherwise).
"""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from model.data import FEATURES, MAX_MEASUREMENT_CM
from model.network import N_FEATURES, FloatArray
from service.body import (
    FAST_ROW_BYTES,
    Document,
    Rows,
    check_object_sizes,
    json_numbers,
    keys_written,
    refuse_duplicate_keys,
)
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
from service.v2.schema import InferenceRequest, RequestInput, RequestOutput


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


SPARE_BODY_BYTES = 4096  # what the fast path reads besides the rows: the id, the outputs
ONE_ROW_BYTES = 512  # a body this short is first read whole, as one row
_NUMBERS = {float, int}
_TOP_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "data"})
_DATA = re.compile(rb'"data"\s*:\s*\[')
_NUMBER_BYTES = b"0123456789.eE+- \t\r\n"  # with commas, all a flat array of numbers is made of


def fast_request(body: bytes, limit: int) -> tuple[Rows, list[str], str | None] | None:
    """Measurements (n, 4), output names and id of a plain, well-formed request, or None.

    The common request (one FP64 or FP32 input of shape [n, 4], data flat or as n rows of
    four, optional id and named outputs, no parameters) is read in two parts: the data's
    bytes, numbers only, straight into float64 (service.body.json_numbers), and the rest of
    the body by orjson, each value checked for its exact type (:func:`plain_request`); a
    small body of one row in one part (:func:`fast_one_row`). None means "not vouched for":
    :func:`parse` with the schema then either names the problem or accepts an unusual
    request.
    """
    if len(body) > FAST_ROW_BYTES * limit + SPARE_BODY_BYTES:
        return None
    if len(body) <= ONE_ROW_BYTES and (one := fast_one_row(body)) is not None:
        return one
    split = cut_data(body)
    if split is None:
        return None
    numbers, rest, skeleton = split
    try:
        tree = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    plain = plain_request(tree, rest, limit)
    if plain is None or plain[3] != []:  # the data cut out of the body was this tensor's
        return None
    n, names, request_id, _ = plain
    if skeleton[:1] == b"[":  # n rows of four, exactly
        if skeleton + b"," != _ROW_OF_FOUR * n:
            return None
    elif len(skeleton) != n * N_FEATURES - 1:  # flat: the commas between 4n numbers
        return None
    flat = json_numbers(numbers)  # rows are flattened, row-major
    if flat is None or len(flat) != n * N_FEATURES:
        return None
    raw = flat.reshape(n, N_FEATURES)
    if not ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
        return None  # parse names the value
    return raw, names, request_id


def fast_one_row(body: bytes) -> tuple[Rows, list[str], str | None] | None:
    """:func:`fast_request` of a small body of one flat row, in one orjson parse: the row as
    Python numbers, no array to build."""
    try:
        tree = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    plain = plain_request(tree, body, 1)
    if plain is None:
        return None
    _, names, request_id, row = plain
    if type(row) is not list or len(row) != N_FEATURES or not set(map(type, row)) <= _NUMBERS:
        return None  # (a bool is not an int here)
    if min(row) <= 0 or max(row) > MAX_MEASUREMENT_CM:
        return None
    return [row], names, request_id


def plain_request(tree: Any, read: bytes, limit: int) -> tuple[int, list[str], Any, Any] | None:
    """The row count, output names, id and data of a plain request's document ``tree``
    (orjson's reading of ``read``), everything checked but the data; or None.

    Each value is checked for its exact type. A key written twice, which orjson reads as one,
    is ruled out by counting: without a backslash every ``":`` ends a key, so the document
    holds every key written exactly when the counts agree (the data, numbers, holds none).
    """
    if type(tree) is not dict or not tree.keys() <= _TOP_KEYS:
        return None
    request_id = tree.get("id")
    inputs, outputs = tree.get("inputs"), tree.get("outputs")
    if (
        ("parameters" in tree and tree["parameters"] != {})
        or (request_id is not None and type(request_id) is not str)
        or type(inputs) is not list
        or len(inputs) != 1
        or type(inputs[0]) is not dict
        or inputs[0].keys() != _INPUT_KEYS
    ):
        return None
    tensor = inputs[0]
    shape = tensor["shape"]
    if (
        tensor["name"] != INPUT
        or tensor["datatype"] not in INPUT_DATATYPES
        or type(shape) is not list
        or len(shape) != 2
        or type(shape[0]) is not int
        or type(shape[1]) is not int
        or not 1 <= shape[0] <= limit
        or shape[1] != N_FEATURES
    ):
        return None
    listed = fast_outputs(outputs)
    if listed is None:
        return None
    names, in_json = listed
    keys = len(tree) + len(_INPUT_KEYS) + len(outputs or ()) + 2 * in_json
    if not keys_written(read, keys):
        return None
    return shape[0], names, request_id, tensor["data"]


def cut_data(body: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The bytes of the data written ``"data": [...]``, flat or as rows; the body without
    them (its data now ``[]``); and their skeleton, what is left with the numbers and white
    space taken out (commas, and brackets for rows). None unless that is all they hold."""
    found = _DATA.search(body)
    if found is None:
        return None
    start = found.end()
    nested = body[start : start + 1] == b"["
    end = body.find(b"]]" if nested else b"]", start) + nested
    if end < start:
        return None
    numbers = body[start:end]
    skeleton = numbers.translate(None, _NUMBER_BYTES)
    if skeleton.translate(None, b",[]" if nested else b","):
        return None  # a string, a boolean, a null, an object, or rows nested deeper
    return numbers, body[:start] + body[end:], skeleton


_ROW_OF_FOUR = b"[" + b"," * (N_FEATURES - 1) + b"],"


def fast_outputs(outputs: Any) -> tuple[list[str], int] | None:
    """The names of a plain ``outputs`` list, each ``{"name": known}`` once, and how many
    say ``"parameters": {"binary_data": false}`` as tritonclient writes; or None."""
    if outputs is None:
        return list(OUTPUTS), 0
    if type(outputs) is not list or not outputs:
        return None
    names, in_json = [], 0
    for output in outputs:
        if type(output) is not dict or type(name := output.get("name")) is not str:
            return None
        if name not in OUTPUTS:  # (after the type: a dict cannot be looked up)
            return None
        if output.keys() == _OUTPUT_IN_JSON and output["parameters"] == _IN_JSON:
            in_json += 1  # (or 0, which equals False: the schema's path ignores it alike)
        elif output.keys() != {"name"}:
            return None
        names.append(name)
    return (names, in_json) if len(set(names)) == len(names) else None


_OUTPUT_IN_JSON = frozenset({"name", "parameters"})
_IN_JSON = {"binary_data": False}


def where(loc: tuple[int | str, ...]) -> str:
    """``('inputs', 0, 'shape', 1)`` -> ``inputs[0].shape[1]``; the body itself is ``body``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.lstrip(".") or "body"


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


def tensor_rows(tensor: RequestInput, limit: int) -> FloatArray:
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
