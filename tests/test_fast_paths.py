"""The fast paths of the body routes against the schemas they stand in for, on generated bodies.

`/predict` and `/v2/models/iris/infer` first try a fast reading of the common body (orjson and
byte counts; service/body.py, service/v2/tensors.py) and fall back to the pydantic schema for
anything they do not vouch for. The rule is one way: whatever a fast path accepts, the schema
path accepts too, with the same values. Bodies here are written as text, so rows can carry a
key twice, an extra key, a missing one, and values of every JSON type.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.data import CLASSES, FEATURES
from service.body import (
    FAST_ROW_BYTES,
    SMALL_BATCH,
    duplicate_key,
    fast_instances,
    fast_rows,
    load,
)
from service.schemas import PredictRequest
from service.v2.protocol import OUTPUTS
from service.v2.routes import answer_json, row_answer_json
from service.v2.tensors import (
    SPARE_BODY_BYTES,
    fast_request,
    output_names,
    parse,
    tensor_rows,
    the_input,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VERSION = "20261128T004614.062920Z-7483c053"

good = st.one_of(
    st.floats(min_value=0.1, max_value=100.0, allow_nan=False),
    st.integers(min_value=1, max_value=100),
    st.decimals(min_value=1, max_value=99, places=1).map(float),
)
bad = st.one_of(
    st.sampled_from([0, 0.0, -1.5, 100.000001, 1e300, True, False, None, "5.1", [5.1], {"cm": 1}]),
    st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def value(draw: st.DrawFn) -> Any:
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
    colon = draw(st.sampled_from([":", ": "]))
    text = "{" + ",".join(f"{json.dumps(k)}{colon}{json.dumps(v)}" for k, v in pairs) + "}"
    if change in (3, 4):  # a character more or less, in a key, a value or between
        at = draw(st.integers(0, len(text) - 1))
        more = draw(st.sampled_from("0123456789 .-+eE,:") if change == 3 else st.just(""))
        text = text[:at] + more + text[at + (change == 4) :]
    return text


@given(
    rows=st.lists(row_text(), min_size=1, max_size=SMALL_BATCH + 4),
    version=st.sampled_from([None, VERSION, "../x", 7]),
    spaced=st.booleans(),
)
@FAST
def test_what_the_predict_fast_path_accepts_the_schema_accepts_alike(
    rows: list[str], version: Any, spaced: bool
) -> None:
    separator = ", " if spaced else ","
    text = '{"instances":[' + separator.join(rows) + "]"
    if version is not None:
        text += f',"model_version":{json.dumps(version)}'
    body = (text + "}").encode()
    many = fast_rows(body, 10_000)
    fast = fast_instances(body)
    if many is not None:  # where both vouch, the same values
        assert fast is None or np.array_equal(np.asarray(fast[0], dtype=np.float64), many[0])
        fast = many
    if fast is None:
        return
    assert duplicate_key(body) is None, body  # the slow path refuses keys written twice
    parsed = PredictRequest.model_validate_json(body)  # raises if the fast path was wrong
    raw, got_version = fast
    expected = [[getattr(row, name) for name in FEATURES] for row in parsed.instances]
    assert np.asarray(raw, dtype=np.float64).tolist() == expected
    assert got_version == parsed.model_version


@st.composite
def inference_request(draw: st.DrawFn) -> dict[str, Any]:
    """An inference request: data flat, as rows of four or ragged; now and then a field wrong."""
    data = draw(st.lists(value(), min_size=4, max_size=4 * (SMALL_BATCH + 2)))
    n = len(data) // 4
    data = data[: 4 * n]
    tensor: dict[str, Any] = {
        "name": "measurements",
        "shape": [n, 4],
        "datatype": draw(st.sampled_from(["FP64", "FP32", "INT64"])),
        "data": data,
    }
    layout = draw(st.sampled_from(["flat", "rows", "ragged"]))
    if layout != "flat":  # rows of four, or two rows of other lengths among them
        tensor["data"] = [data[i : i + 4] for i in range(0, len(data), 4)]
    if layout == "ragged" and n > 1:
        cut = draw(st.integers(1, 7))
        tensor["data"][:2] = [data[:cut], data[cut:8]]
    request: dict[str, Any] = {"inputs": [tensor]}
    outputs = draw(st.sampled_from([None, ["label"], ["probabilities", "label"], ["label"] * 2]))
    if outputs is not None:
        in_json = draw(st.sampled_from([None, False, 0, True, "false"]))
        written = {} if in_json is None else {"parameters": {"binary_data": in_json}}
        request["outputs"] = [{"name": name} | written for name in outputs]
    request_id = draw(st.sampled_from([None, "r-1", 5, "false", "data"]))
    if request_id is not None:
        request["id"] = request_id
    parameters: Any = draw(st.sampled_from([None, {}, 0, [], {"a": 1}]))
    if parameters is not None:
        request["parameters"] = parameters
    return request


@given(request=inference_request(), compact=st.booleans())
@FAST
def test_what_the_v2_fast_path_accepts_the_schema_accepts_alike(
    request: dict[str, Any], compact: bool
) -> None:
    body = json.dumps(request, separators=(",", ":") if compact else None).encode()
    fast = fast_request(body, limit=10_000)
    if fast is None:
        return
    parsed = parse(load(body))  # raises (a 400) if the fast path was wrong
    raw, names, got_id = fast
    expected = tensor_rows(the_input(parsed.inputs), 10_000)
    assert np.array_equal(np.asarray(raw, dtype=np.float64), expected)
    assert names == output_names(parsed.outputs)
    assert got_id == parsed.id


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
    texts=st.lists(number_text, min_size=8, max_size=64),
    rows=st.booleans(),
    spaced=st.booleans(),
)
@FAST
def test_the_v2_fast_path_reads_each_number_to_the_last_bit(
    texts: list[str], rows: bool, spaced: bool
) -> None:
    """Many rows are read straight into float64: each value is the double nearest the decimal
    written (Python's float() is correctly rounded), however many digits it has."""
    texts = texts[: len(texts) // 4 * 4]
    fast = fast_request(flat_body(texts, rows=rows, spaced=spaced), limit=10_000)
    assert fast is not None
    expected = np.array([float(text) for text in texts]).reshape(-1, 4)
    assert np.asarray(fast[0]).tobytes() == expected.tobytes()


def test_the_v2_fast_path_vouches_for_what_clients_send() -> None:
    """The fast path is taken (not only safe) for the bodies clients write: flat and compact
    as tritonclient.http writes them, rows as json.dumps writes them, one row and many."""
    values = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]] * 5_000
    flat = [v for row in values for v in row]
    tensor = {"name": "measurements", "shape": [10_000, 4], "datatype": "FP64", "data": flat}
    triton = {  # tritonclient.http with binary_data=False
        "inputs": [tensor],
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
    }
    bodies = {
        "tritonclient": json.dumps(triton, separators=(",", ":")).encode(),
        "rows, json.dumps": json.dumps({"inputs": [tensor | {"data": values}]}).encode(),
        "one row": json.dumps({"inputs": [tensor | {"shape": [1, 4], "data": flat[:4]}]}).encode(),
    }
    for name, body in bodies.items():
        fast = fast_request(body, limit=10_000)
        assert fast is not None, name
        n = 1 if name == "one row" else 10_000
        assert np.asarray(fast[0], dtype=np.float64).tolist() == values[:n], name
    assert fast_request(bodies["tritonclient"], limit=10_000)[1] == ["label"]  # type: ignore[index]


def test_the_predict_fast_path_for_many_rows_vouches_for_what_clients_send() -> None:
    """Many rows are read from the bytes (fast_rows) when written as clients write them,
    compact or as json.dumps spaces them, with or without a version; the values exactly."""
    values = np.random.default_rng(7).uniform(0.1, 100.0, size=(2_000, 4)).round(3)
    instances = [dict(zip(FEATURES, row, strict=True)) for row in values.tolist()]
    for request in ({"instances": instances}, {"model_version": VERSION, "instances": instances}):
        for separators in ((",", ":"), None):
            body = json.dumps(request, separators=separators).encode()
            fast = fast_rows(body, 10_000)
            assert fast is not None, separators
            assert fast[0].tobytes() == values.tobytes()
            assert fast[1] == request.get("model_version")
    reordered = [dict(reversed(row.items())) for row in instances]
    exponent = [instances[0] | {"petal_width": 1e-05}, *instances[1:]]
    for rows in (reordered, exponent):  # left to the other paths, which read them
        body = json.dumps({"instances": rows}).encode()
        assert fast_rows(body, 10_000) is None
        assert fast_instances(body) is not None


def test_the_predict_fast_path_for_many_rows_reads_keys_exactly() -> None:
    """A key spelled otherwise, a value left out, split or moved: never read as rows."""
    good = '{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}'
    odd = [
        good.replace('"sepal_length":5.1', '"sepal_length5":.1'),  # a digit moved into a key
        good.replace('"sepal_length":5.1', '"sepal_length5":'),  # ... standing in for a value
        good.replace('"sepal_length"', '"sepal_ length"'),  # a space in a key
        good.replace('"sepal_length"', '"sepal_lenegth"'),  # a letter more
        good.replace(":5.1", ":5.1 3"),  # two numbers for one value
        good.replace(":5.1", ":5.1.3"),
        good.replace(":5.1", ":"),
        good.replace(":5.1", ":5e1"),  # an exponent: left to orjson
        good.replace("}", ',"extra":1}'),
        # a number byte outside a value's place, taken for part of one if keys were dropped
        good.replace('"sepal_length":5.1', '"sepal_length"5:.1'),
        good.replace('{"sepal_length":5.1', '{5"sepal_length":.1'),
        good.replace('{"sepal_length":5.1', '{5"sepal_length":'),
        good.replace(',"sepal_width":3.5', ',3"sepal_width":.5'),
        good.replace("0.2}", "0}.2"),
        good + "2",
        "1" + good,
    ]
    assert fast_rows(('{"instances":[' + ",".join([good] * 3) + "]}").encode(), 3) is not None
    for row in odd:
        body = '{"instances":[' + ",".join([good, row, good]) + "]}"
        assert fast_rows(body.encode(), 10_000) is None, row


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


def test_the_fast_paths_leave_bodies_past_their_row_bytes_to_the_budget() -> None:
    """A body longer than FAST_ROW_BYTES a row of the limit is never copied or scanned by a
    fast path (white space can make any body long): the budget counts it first."""
    row = '{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}'
    body = ('{"instances":[' + ",".join([row] * 200) + "]}").encode()
    assert fast_rows(body, 200) is not None
    padded = body[:-2] + b" " * (FAST_ROW_BYTES * 200) + b"]}"
    assert fast_rows(padded, 200) is None
    assert fast_instances(padded) is not None  # the body is fine: the counted path reads it
    tensor = '{"inputs":[{"name":"measurements","shape":[2,4],"datatype":"FP64","data":[%s]}]}'
    data = ",".join(["5.1", "3.5", "1.4", "0.2"] * 2)
    assert fast_request((tensor % data).encode(), 2) is not None
    spaced = (tensor % (data + " " * (FAST_ROW_BYTES * 2 + SPARE_BODY_BYTES))).encode()
    assert fast_request(spaced, 2) is None


def test_an_output_named_by_an_object_is_left_to_the_schema() -> None:
    """An output's name that is not a string (a JSON object, unhashable) is not looked up."""
    body = {
        "inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
        "outputs": [{"name": {}, "parameters": {}}],
    }
    assert fast_request(json.dumps(body).encode(), 10) is None
