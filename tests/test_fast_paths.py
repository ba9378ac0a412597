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

from model.data import FEATURES
from service.body import SMALL_BATCH, duplicate_key, fast_instances, load
from service.schemas import PredictRequest
from service.v2.tensors import fast_request, output_names, parse, tensor_rows, the_input

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
    if draw(st.booleans()):
        pairs.reverse()
    return "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"


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
    fast = fast_instances(body)
    if fast is None:
        return
    assert duplicate_key(body) is None, body  # the slow path refuses keys written twice
    parsed = PredictRequest.model_validate_json(body)  # raises if the fast path was wrong
    raw, got_version = fast
    expected = [[getattr(row, name) for name in FEATURES] for row in parsed.instances]
    assert np.asarray(raw, dtype=np.float64).tolist() == expected
    assert got_version == parsed.model_version


@given(
    data=st.lists(value(), min_size=4, max_size=4 * (SMALL_BATCH + 2)),
    rows_of_four=st.booleans(),
    datatype=st.sampled_from(["FP64", "FP32", "INT64"]),
    outputs=st.sampled_from([None, ["label"], ["probabilities", "label"], ["label", "label"]]),
    request_id=st.sampled_from([None, "r-1", 5]),
)
@FAST
def test_what_the_v2_fast_path_accepts_the_schema_accepts_alike(
    data: list[Any], rows_of_four: bool, datatype: str, outputs: Any, request_id: Any
) -> None:
    n = len(data) // 4
    data = data[: 4 * n]
    tensor: dict[str, Any] = {
        "name": "measurements",
        "shape": [n, 4],
        "datatype": datatype,
        "data": [data[i : i + 4] for i in range(0, len(data), 4)] if rows_of_four else data,
    }
    request: dict[str, Any] = {"inputs": [tensor]}
    if outputs is not None:
        request["outputs"] = [{"name": name} for name in outputs]
    if request_id is not None:
        request["id"] = request_id
    document = load(json.dumps(request).encode())
    fast = fast_request(document, limit=10_000)
    if fast is None:
        return
    parsed = parse(document)  # raises (a 400) if the fast path was wrong
    raw, names, got_id = fast
    expected = tensor_rows(the_input(parsed.inputs), 10_000)
    assert np.array_equal(np.asarray(raw, dtype=np.float64), expected)
    assert names == output_names(parsed.outputs)
    assert got_id == parsed.id
