"""The decoders of the two wire formats against a strict reader written here, independently.

`/predict` bodies are decoded by service/native.py (msgspec's struct, then the pydantic
schema for whatever the struct does not read), `/v2` inference requests by
service/v2/decode.py (msgspec's structs, simdjson for many rows). The rule, both ways: a body
is accepted exactly when a strict reader accepts it (UTF-8, no key twice, finite numbers, the
schema's rules), and with the numbers that reader read, to the last bit. The strict reader
below is the standard library's parser with those rules written out, sharing no code with
the service. Bodies come from valid ones changed by a byte (inserted, deleted, replaced at
every position), a number or a key rewritten, and generated rows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from model.data import CLASSES, FEATURES
from service import body as body_module
from service import native
from service.errors import ProblemError
from service.inference import check_rows
from service.v2 import decode
from service.v2.errors import ProtocolError
from service.v2.protocol import OUTPUTS
from service.v2.routes import (
    answer_json,
    binary_answer,
    binary_tensor,
    label_bytes,
    row_answer_json,
    row_binary_answer,
    row_binary_tensor,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VERSION = "20261128T004614.062920Z-7483c053"
LIMIT = 50
Reading = tuple[Any, ...] | None


# The strict reader ---------------------------------------------------------------------------


class StrictRefusalError(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise StrictRefusalError("a key twice")
    return dict(pairs)


def _constant(name: str) -> Any:
    raise StrictRefusalError(name)  # NaN, Infinity, -Infinity are not JSON


def strict_json(body: bytes) -> Any:
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    strings: list[Any] = [value]
    while strings:  # every string encodable: no lone surrogate
        item = strings.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            strings.extend(item)
            strings.extend(item.values())
        elif isinstance(item, list):
            strings.extend(item)
    return value


def measurement(value: Any) -> float:
    if type(value) not in (int, float):
        raise StrictRefusalError("not a number")
    number = float(value)  # OverflowError past a double
    if not (math.isfinite(number) and 0 < number <= 100):
        raise StrictRefusalError("out of range")
    return number


def strict_predict(body: bytes, limit: int = LIMIT) -> Reading:
    """(rows, version) as the /predict schema reads a body, or None."""
    try:
        document = strict_json(body)
        if type(document) is not dict or not {"instances"} <= document.keys():
            raise StrictRefusalError("shape")
        if not document.keys() <= {"instances", "model_version"}:
            raise StrictRefusalError("a key")
        instances, version = document["instances"], document.get("model_version")
        if type(instances) is not list or not 1 <= len(instances) <= limit:
            raise StrictRefusalError("instances")
        rows = []
        for row in instances:
            if type(row) is not dict or sorted(row) != sorted(FEATURES):
                raise StrictRefusalError("a row")
            rows.append([measurement(row[name]) for name in FEATURES])
        if version is not None and (
            type(version) is not str
            or not re.fullmatch(r"[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{8}", version)
        ):
            raise StrictRefusalError("version")
    except (StrictRefusalError, ValueError, OverflowError, RecursionError):
        return None
    return rows, version


def dimension(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    raise StrictRefusalError("a dimension")


EXTENSIONS = ("binary_data_size", "shared_memory_region", "classification")


def parameters_ok(value: Any, extensions: bool, flag: str | None = None) -> bool:
    """A parameters object: null or an object, without the extensions this reading refuses
    (JSON data with binary_data_size is data given both ways), its ``flag`` a boolean."""
    if value is None:
        return True
    if type(value) is not dict:
        return False
    if flag is not None and flag in value and type(value[flag]) is not bool:
        return False
    return not (extensions and any(name in value for name in EXTENSIONS))


def strict_infer(body: bytes, limit: int = LIMIT) -> Reading:
    """(rows, output names, id) as the protocol's rules read a request, or None."""
    try:
        request = strict_json(body)
        if type(request) is not dict or "inputs" not in request:
            raise StrictRefusalError("shape")
        if not request.keys() <= {"id", "inputs", "outputs", "parameters"}:
            raise StrictRefusalError("a key")
        request_id = request.get("id")
        if request_id is not None and type(request_id) is not str:
            raise StrictRefusalError("id")
        if not parameters_ok(request.get("parameters"), False, "binary_data_output"):
            raise StrictRefusalError("parameters")
        inputs = request["inputs"]
        if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
            raise StrictRefusalError("inputs")
        tensor = inputs[0]
        if (
            not {"name", "shape", "datatype", "data"}
            <= tensor.keys()
            <= {
                "name",
                "shape",
                "datatype",
                "data",
                "parameters",
            }
        ):
            raise StrictRefusalError("tensor keys")
        if tensor["name"] != "measurements" or tensor["datatype"] not in ("FP64", "FP32"):
            raise StrictRefusalError("tensor")
        if not parameters_ok(tensor.get("parameters"), extensions=True):
            raise StrictRefusalError("tensor parameters")
        shape = tensor["shape"]
        if type(shape) is not list or len(shape) != 2:
            raise StrictRefusalError("shape")
        n, width = (dimension(dim) for dim in shape)
        if width != 4 or not 1 <= n <= limit:
            raise StrictRefusalError("shape")
        data = tensor["data"]
        if type(data) is not list:
            raise StrictRefusalError("data")
        if len(data) == n and all(type(row) is list and len(row) == 4 for row in data):
            flat = [value for row in data for value in row]
        elif len(data) == 4 * n:
            flat = data
        else:
            raise StrictRefusalError("data shape")
        rows = np.array([measurement(value) for value in flat]).reshape(n, 4).tolist()
        outputs = request.get("outputs")
        names = list(OUTPUTS)
        if outputs is not None:
            if type(outputs) is not list:
                raise StrictRefusalError("outputs")
            asked = []
            for output in outputs:
                if type(output) is not dict or not {"name"} <= output.keys() <= {
                    "name",
                    "parameters",
                }:
                    raise StrictRefusalError("an output")
                if output["name"] not in OUTPUTS or output["name"] in asked:
                    raise StrictRefusalError("an output's name")
                if not parameters_ok(output.get("parameters"), True, "binary_data"):
                    raise StrictRefusalError("an output's parameters")
                asked.append(output["name"])
            names = asked or names
    except (StrictRefusalError, ValueError, OverflowError, RecursionError, TypeError):
        return None
    return rows, names, request_id


# The decoders, as the routes call them -------------------------------------------------------


def native_predict(body: bytes, limit: int = LIMIT) -> Reading:
    try:
        rows, version = native.predict_input(body, limit)
        check_rows(len(rows), limit)  # the core's check
    except (ProblemError, ValidationError):
        return None
    return np.asarray(rows, dtype=np.float64).tolist(), version


def v2_infer(body: bytes, limit: int = LIMIT) -> Reading:
    try:
        rows, names, _, request_id = decode.request_input(body, limit)
    except (ProtocolError, ProblemError):
        return None
    return np.asarray(rows, dtype=np.float64).tolist(), names, request_id


def agree(
    decoder: Callable[[bytes], Reading], strict: Callable[[bytes], Reading], body: bytes
) -> None:
    got, expected = decoder(body), strict(body)
    assert (got is None) == (expected is None), (body, got, expected)
    if got is not None and expected is not None:  # the same numbers, to the bit
        assert np.array(got[0]).tobytes() == np.array(expected[0]).tobytes(), body
        assert got[1:] == expected[1:], body


# Bodies --------------------------------------------------------------------------------------

ROW = dict(zip(FEATURES, (5.1, 3.5, 1.4, 0.2), strict=True))
ROW2 = dict(zip(FEATURES, (6.7, 3, 5.2, 2.3), strict=True))
PREDICT_SEEDS = [
    {"instances": [ROW]},
    {"instances": [ROW, ROW2], "model_version": VERSION},
    {"instances": [ROW2, ROW, ROW2]},  # many rows: the array path
]
FLAT = [5.1, 3.5, 1.4, 0.2]
INFER_SEEDS: list[dict[str, Any]] = [
    {"inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP64", "data": FLAT}]},
    {
        "id": "r1",
        "inputs": [
            {"name": "measurements", "shape": [2, 4], "datatype": "FP32", "data": [FLAT, FLAT]}
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
    },
    {  # many rows, flat: the simdjson path
        "inputs": [
            {"name": "measurements", "shape": [10, 4], "datatype": "FP64", "data": FLAT * 10}
        ]
    },
    {
        "inputs": [
            {"name": "measurements", "shape": [9, 4], "datatype": "FP64", "data": [FLAT] * 9}
        ],
        "parameters": {},
    },
]
BYTES = b'0 19.-+eE",:{}[]\\altnux\xff\x00'


def byte_changes(body: bytes) -> Iterator[bytes]:
    """``body`` with one byte inserted, deleted or replaced, at every position."""
    for at in range(len(body) + 1):
        for byte in BYTES:
            yield body[:at] + bytes([byte]) + body[at:]
            if at < len(body) and body[at] != byte:
                yield body[:at] + bytes([byte]) + body[at + 1 :]
        if at < len(body):
            yield body[:at] + body[at + 1 :]


NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][+-]?\d+)?")
KEY = re.compile(rb'"(\w+)"\s*:')
NUMBERS = [
    b"1e400", b"-0", b"01", b"NaN", b"Infinity", b'"5.1"', b"true", b"null", b"1e2", b"100",
    b"100.00000000000001", b"1E-2", b"99999999999999999999999", b"[5.1]", b"{}",
]  # fmt: skip


def token_changes(body: bytes) -> Iterator[bytes]:
    """Each number replaced by another JSON value; each key written twice (its value then
    the first), escaped, or spaced from its colon."""
    for found in NUMBER.finditer(body):
        for other in NUMBERS:
            yield body[: found.start()] + other + body[found.end() :]
    for found in KEY.finditer(body):
        key = found.group(1)
        start, end = found.span()
        for twice in (b'"%s":7,' % key, b'"%s" :7,' % key):  # written twice, in its object
            yield body[:start] + twice + body[start:]
        escaped = b'"' + key[:1] + b"\\u00%02x" % key[1] + key[2:] + b'"'
        yield body[:start] + escaped + body[start + len(key) + 2 :]
        yield body[: end - 1] + b" :" + body[end:]


SEEDS = [
    *((native_predict, strict_predict, seed) for seed in PREDICT_SEEDS),
    *((v2_infer, strict_infer, seed) for seed in INFER_SEEDS),
]


@pytest.mark.parametrize(
    ("decoder", "strict", "seed"),
    SEEDS,
    ids=[f"{'predict' if d is native_predict else 'v2'}-{i}" for i, (d, _, _) in enumerate(SEEDS)],
)
@pytest.mark.parametrize("compact", [True, False])
def test_bodies_a_byte_away_are_read_as_the_strict_reader_reads_them(
    decoder: Callable[[bytes], Reading],
    strict: Callable[[bytes], Reading],
    seed: dict[str, Any],
    compact: bool,
) -> None:
    body = json.dumps(seed, separators=(",", ":") if compact else None).encode()
    assert decoder(body) is not None
    for changed in (*byte_changes(body), *token_changes(body)):
        agree(decoder, strict, changed)


def test_keys_written_twice_are_refused_at_every_size() -> None:
    """The parser differential of the first hardening round: a second "instances" (spaced
    before its colon) past 8 KiB was once served from the first array."""
    for n in (1, 10, 100, 120):
        rows = json.dumps({"instances": [ROW] * n})[:-1]
        for twice in (',"instances":[]}', ', "instances" :[]}', f',"model_version":"{VERSION}"}}'):
            body = (rows + twice).encode()
            if "model_version" in twice:
                body = body.replace(b'{"instances"', b'{"model_version":"x","instances"', 1)
            assert native_predict(body, 200) is None, (n, twice)
            assert strict_predict(body, 200) is None


@st.composite
def value(draw: st.DrawFn) -> Any:
    good = st.one_of(
        st.floats(min_value=0.1, max_value=100.0, allow_nan=False),
        st.integers(min_value=1, max_value=100),
        st.decimals(min_value=1, max_value=99, places=1).map(float),
    )
    bad = st.one_of(
        st.sampled_from([0, 0.0, -1.5, 100.000001, 1e300, True, False, None, "5.1", [5.1], {}]),
        st.floats(allow_nan=False, allow_infinity=False),
    )
    return draw(bad) if draw(st.integers(0, 19)) == 0 else draw(good)


@st.composite
def row_text(draw: st.DrawFn) -> str:
    """One row as JSON text: the four keys, now and then one twice, one missing or an extra."""
    pairs = [(name, draw(value())) for name in FEATURES]
    change = draw(st.integers(0, 29))
    if change == 0:
        pairs.append((draw(st.sampled_from(FEATURES)), draw(value())))  # a key twice
    elif change == 1:
        pairs.pop(draw(st.integers(0, 3)))
    elif change == 2:
        pairs.append(("extra", draw(value())))
    if draw(st.integers(0, 3)) == 0:
        pairs.reverse()
    colon = draw(st.sampled_from([":", ": ", " :"]))
    return "{" + ",".join(f"{json.dumps(k)}{colon}{json.dumps(v)}" for k, v in pairs) + "}"


@given(
    rows=st.lists(row_text(), min_size=1, max_size=12),
    version=st.sampled_from([None, VERSION, "../x", 7, VERSION + "\n"]),
    spaced=st.booleans(),
)
@FAST
def test_generated_predict_bodies_are_read_as_the_strict_reader_reads_them(
    rows: list[str], version: Any, spaced: bool
) -> None:
    separator = ", " if spaced else ","
    text = '{"instances":[' + separator.join(rows) + "]"
    if version is not None:
        text += f',"model_version":{json.dumps(version)}'
    agree(native_predict, strict_predict, (text + "}").encode())


@st.composite
def inference_request(draw: st.DrawFn) -> dict[str, Any]:
    """An inference request: data flat, as rows of four or ragged; now and then a field wrong."""
    data = draw(st.lists(value(), min_size=4, max_size=4 * 12))
    n = len(data) // 4
    data = data[: 4 * n]
    tensor: dict[str, Any] = {
        "name": "measurements",
        "shape": draw(st.sampled_from([[n, 4], [float(n), 4], [n, 4.0], [n, 4, 1], [n + 1, 4]])),
        "datatype": draw(st.sampled_from(["FP64", "FP32", "INT64", "fp64"])),
        "data": data,
    }
    layout = draw(st.sampled_from(["flat", "rows", "ragged"]))
    if layout != "flat":  # rows of four, or two rows of other lengths among them
        tensor["data"] = [data[i : i + 4] for i in range(0, len(data), 4)]
    if layout == "ragged" and n > 1:
        cut = draw(st.integers(1, 7))
        tensor["data"][:2] = [data[:cut], data[cut:8]]
    request: dict[str, Any] = {"inputs": [tensor]}
    outputs = draw(
        st.sampled_from([None, [], ["label"], ["probabilities", "label"], ["label"] * 2])
    )
    if outputs is not None:
        in_json = draw(st.sampled_from([None, False, 0, True, "false"]))
        written = {} if in_json is None else {"parameters": {"binary_data": in_json}}
        request["outputs"] = [{"name": name} | written for name in outputs]
    request_id = draw(st.sampled_from([None, "r-1", 5, "false", "data"]))
    if request_id is not None:
        request["id"] = request_id
    parameters: Any = draw(st.sampled_from([None, {}, 0, [], {"a": 1}, {"binary_data_size": 4}]))
    if parameters is not None:
        request["parameters"] = parameters
    return request


@given(request=inference_request(), compact=st.booleans())
@FAST
def test_generated_inference_requests_are_read_as_the_strict_reader_reads_them(
    request: dict[str, Any], compact: bool
) -> None:
    body = json.dumps(request, separators=(",", ":") if compact else None).encode()
    agree(v2_infer, strict_infer, body)


def flat_body(texts: list[str], *, rows: bool = False, spaced: bool = False) -> bytes:
    """An inference request whose data is ``texts``, numbers written as they are given."""
    comma = ", " if spaced else ","
    if rows:
        data = comma.join("[" + comma.join(texts[i : i + 4]) + "]" for i in range(0, len(texts), 4))
    else:
        data = comma.join(texts)
    tensor = f'"name":"measurements","shape":[{len(texts) // 4},4],"datatype":"FP64"'
    return ('{"inputs":[{' + tensor + ',"data":[' + data + "]}]}").encode()


number_text = st.one_of(
    st.floats(min_value=0.1, max_value=100.0).map(repr),
    st.floats(min_value=0.1, max_value=100.0).map(lambda v: f"{v:.25e}"),  # past 17 digits
    st.from_regex(r"[1-9]\.[0-9]{1,40}([eE][+-]?0?1)?", fullmatch=True),
    st.from_regex(r"[1-9][0-9]?(\.[0-9]{1,30})?", fullmatch=True),
    st.just("100"),
)


@given(
    texts=st.lists(number_text, min_size=4 * (decode.FEW_ROWS + 1), max_size=4 * 24),
    rows=st.booleans(),
    spaced=st.booleans(),
)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_many_rows_are_read_straight_into_float64_to_the_last_bit(
    texts: list[str], rows: bool, spaced: bool
) -> None:
    """Many rows are read by simdjson into float64: each value is the double nearest the
    decimal written (Python's float() is correctly rounded), however many digits it has."""
    texts = texts[: len(texts) // 4 * 4]
    got = decode.request_input(flat_body(texts, rows=rows, spaced=spaced), limit=10_000).rows
    assert isinstance(got, np.ndarray)  # the array path, not the named one
    expected = np.array([float(text) for text in texts]).reshape(-1, 4)
    assert got.tobytes() == expected.tobytes()


def test_common_bodies_take_the_typed_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bodies clients write are read by the structs, with keys counted, never by the
    schema or the standard library's duplicate check: compact and spaced, one row and many,
    with and without a version, flat and nested, tritonclient's outputs."""

    def slow(*_: Any) -> Any:
        raise AssertionError("the slow path was taken")

    monkeypatch.setattr(native, "explained", slow)
    monkeypatch.setattr(decode, "refuse_duplicate_keys", slow)
    monkeypatch.setattr(decode, "tensor_rows", slow)
    values = np.random.default_rng(7).uniform(0.1, 100.0, size=(2_000, 4)).round(3)
    instances = [dict(zip(FEATURES, row, strict=True)) for row in values.tolist()]
    for request in (
        {"instances": instances},
        {"model_version": VERSION, "instances": instances},
        {"instances": instances[:1]},
    ):
        for separators in ((",", ":"), None):
            body = json.dumps(request, separators=separators).encode()
            rows, version = native.predict_input(body, 10_000)
            n = len(request["instances"])
            assert np.asarray(rows, dtype=np.float64).tobytes() == values[:n].tobytes()
            assert version == request.get("model_version")
    flat = values.ravel().tolist()
    tensor = {"name": "measurements", "shape": [2_000, 4], "datatype": "FP64", "data": flat}
    triton = {
        "inputs": [tensor],
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
    }
    bodies = [
        json.dumps(triton, separators=(",", ":")).encode(),
        json.dumps({"inputs": [tensor | {"data": values.tolist()}], "id": "7"}).encode(),
    ]
    for body in bodies:
        rows, _, _, _ = decode.request_input(body, 10_000)
        assert np.asarray(rows).tobytes() == values.tobytes()
    # tritonclient's binary form: no "data" key, the bytes after the JSON; one row and many
    for n in (1, 2_000):
        binary = values[:n].astype("<f8").tobytes()
        described = without_data(tensor) | {
            "shape": [n, 4],
            "parameters": {"binary_data_size": len(binary)},
        }
        head = {"inputs": [described], "parameters": {"binary_data_output": True}}
        body = json.dumps(head).encode()
        rows, _, as_binary, _ = decode.request_input(body, 10_000, memoryview(binary))
        assert np.asarray(rows).tobytes() == values[:n].tobytes()
        assert as_binary == [True, True, True]


def without_data(tensor: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in tensor.items() if key != "data"}


def test_a_key_spaced_from_its_colon_once_is_counted_once() -> None:
    body = json.dumps(INFER_SEEDS[1]).replace('"inputs":', '"inputs" :').encode()
    assert v2_infer(body) == strict_infer(body) != None  # noqa: E711


def test_quotes_agree_only_without_a_backslash() -> None:
    assert body_module.quotes_agree(b'{"a":1}', 1)
    assert not body_module.quotes_agree(b'{"a":1,"a":2}', 1)
    assert not body_module.quotes_agree(b'{"\\u0061":1}', 1)  # an escape: ask duplicate_key
    assert body_module.duplicate_key(b'{"\\u0061":1,"a":2}') == "a"


@given(
    names=st.permutations(list(OUTPUTS)).flatmap(
        lambda names: st.sampled_from([names[:k] for k in range(1, len(names) + 1)])
    ),
    request_id=st.one_of(st.none(), st.text(max_size=20)),
    probabilities=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    k=st.integers(0, 2),
)
@FAST
def test_a_one_row_answer_is_written_as_any_other(
    names: list[str], request_id: str | None, probabilities: list[float], k: int
) -> None:
    """The one-row answer, joined from pieces written once, is the general answer's bytes."""
    data = {"probabilities": probabilities, "class_index": [k], "label": [CLASSES[k]]}
    version = "20261202T185857.137780Z-1e63eedf"
    expected = answer_json(version, request_id, names, 1, data)
    assert row_answer_json(version, request_id, names, probabilities, k) == expected


@given(
    names=st.permutations(list(OUTPUTS)).flatmap(
        lambda names: st.sampled_from([names[:k] for k in range(1, len(names) + 1)])
    ),
    binary=st.lists(st.booleans(), min_size=3, max_size=3),
    request_id=st.one_of(st.none(), st.text(max_size=20)),
    probabilities=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    k=st.integers(0, 2),
)
@FAST
def test_a_one_row_binary_answer_is_written_as_any_other(
    names: list[str], binary: list[bool], request_id: str | None, probabilities: list[float], k: int
) -> None:
    """The one-row binary answer (and each output's bytes, which gRPC's raw answer shares),
    written from Python values, is the general answer's bytes, written from arrays."""
    as_binary = binary[: len(names)]
    if not any(as_binary):
        as_binary[0] = True
    o_s, index = np.array([probabilities]), np.array([k])
    version = "20261202T185857.137780Z-1e63eedf"
    expected = binary_answer(version, request_id, names, as_binary, o_s=o_s, index=index)
    row = row_binary_answer(version, request_id, names, as_binary, probabilities=probabilities, k=k)
    assert row == expected
    for name in names:
        assert row_binary_tensor(name, probabilities, k) == binary_tensor(name, o_s, index)


def bytes_elements(index: Iterator[int] | list[int]) -> bytes:
    """Labels as the binary extension writes BYTES: each its length (4 bytes, little-endian),
    then its UTF-8."""
    return b"".join(len(CLASSES[k]).to_bytes(4, "little") + CLASSES[k].encode() for k in index)


@given(index=st.lists(st.integers(0, len(CLASSES) - 1), max_size=60))
@FAST
def test_labels_in_binary_are_each_rows_one_after_the_other(index: list[int]) -> None:
    """label_bytes (four rows at a time, for speed) writes each row's label, in order, for
    any count of rows, not only fours."""
    assert label_bytes(np.array(index, dtype=np.int64)) == bytes_elements(index)


def test_ten_thousand_labels_in_binary_are_each_rows_one_after_the_other() -> None:
    index = np.random.default_rng(7).integers(0, len(CLASSES), 10_003)
    assert label_bytes(index) == bytes_elements(index.tolist())


def test_an_output_named_by_an_object_is_a_400_naming_it() -> None:
    body = {
        "inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
        "outputs": [{"name": {}, "parameters": {}}],
    }
    with pytest.raises(ProtocolError) as error:
        decode.request_input(json.dumps(body).encode(), 10)
    assert error.value.status == 400
    assert "outputs[0].name" in error.value.message


@given(
    text=st.binary(min_size=0, max_size=3 * body_module.COUNTED_BY_NUMPY),
    byte=st.sampled_from([b'"', b"{", b"[", b",", b"\x00", b"\xff"]),
)
@FAST
def test_occurrences_counts_as_bytes_count_does(text: bytes, byte: bytes) -> None:
    """The NumPy count past COUNTED_BY_NUMPY bytes (for speed only) is ``bytes.count``."""
    padded = text + byte * (body_module.COUNTED_BY_NUMPY // 2)  # both sides of the threshold
    for sample in (text, padded):
        assert body_module.occurrences(sample, byte) == sample.count(byte)


def read_or_error(read: Callable[..., Any], body: bytes, limit: int, data: bytes) -> Any:
    """What a reading of a binary request returns, or the message of the 400 it raises."""
    try:
        rows, outputs, binary, request_id = read(body, limit, memoryview(data))
    except (ProtocolError, ProblemError) as error:
        return type(error).__name__, str(error)
    return np.asarray(rows).tolist(), outputs, binary, request_id


@given(
    n=st.integers(1, 12),
    datatype=st.sampled_from(["FP64", "FP32"]),
    outputs=st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(list(OUTPUTS))},
            optional={"parameters": st.fixed_dictionaries({"binary_data": st.booleans()})},
        ),
        max_size=3,
        unique_by=lambda output: output["name"],
    ),
    request_id=st.one_of(st.none(), st.text(max_size=12)),
    everything_binary=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@FAST
def test_a_binary_request_with_json_seen_before_is_read_as_any_other(
    *,
    n: int,
    datatype: str,
    outputs: list[dict[str, Any]],
    request_id: str | None,
    everything_binary: bool,
    seed: int,
) -> None:
    """service/v2/known.py (for speed only) reads a binary request whose JSON it has seen as
    the plain path reads it: the same rows, outputs, binary flags and id, or the same 400
    for binary data of the wrong size or with a value out of range; under another row limit
    as that limit says."""
    from service.v2 import known

    width = 8 if datatype == "FP64" else 4
    head: dict[str, Any] = {
        "inputs": [{"name": "measurements", "shape": [n, 4], "datatype": datatype,
                    "parameters": {"binary_data_size": n * 4 * width}}],
    }  # fmt: skip
    if outputs:
        head["outputs"] = outputs
    if request_id is not None:
        head["id"] = request_id
    if everything_binary:
        head["parameters"] = {"binary_data_output": True}
    body = json.dumps(head).encode()
    rng = np.random.default_rng(seed)
    dtype = "<f8" if datatype == "FP64" else "<f4"
    datas = [rng.uniform(0.1, 99.0, (n, 4)).astype(dtype).tobytes() for _ in range(3)]
    bad = np.full((n, 4), 5.0, dtype=dtype)
    bad[n - 1, 2] = -1.0
    datas += [bad.tobytes(), datas[0][:-width], datas[0] + bytes(width)]
    for limit in (100, 100, n - 1):
        for data in datas:
            fast = read_or_error(known.request_input, body, limit, data)
            assert fast == read_or_error(decode.request_input, body, limit, data)
    assert body in known._known


def test_what_is_remembered_of_binary_requests_is_bounded() -> None:
    from service.v2 import known

    one_row = bytes(np.full(4, 5.0, dtype="<f8"))
    for i in range(known.KNOWN_REQUESTS + 1):
        head = {"id": str(i), "inputs": [{"name": "measurements", "shape": [1, 4],
                "datatype": "FP64", "parameters": {"binary_data_size": 32}}]}  # fmt: skip
        known.request_input(json.dumps(head).encode(), 10, memoryview(one_row))
    assert 1 <= len(known._known) <= known.KNOWN_REQUESTS
    assert json.dumps(head).encode() in known._known
    long = head | {"id": "x" * known.KNOWN_BYTES}
    known.request_input(json.dumps(long).encode(), 10, memoryview(one_row))
    assert json.dumps(long).encode() not in known._known
