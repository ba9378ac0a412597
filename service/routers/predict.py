"""POST /predict: measurements in, species and probabilities out.

Its path, from the socket to NumPy and back: service/server.py (the HTTP protocol) ->
service/edge.py (body limits, then this route's handler before any routing) ->
:func:`predict_body` here (parse the body) -> service/inference.py (the row limit, the
model, NumPy, the counters) -> :func:`predictions_json` here (the answer).
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import APIRouter, Request

from model.data import CLASSES
from model.network import FloatArray, IntArray
from service import inference, schemas
from service.body import (
    LARGE_BODY,
    Rows,
    check_budget,
    check_lengths,
    check_media_type,
    check_object_sizes,
    fast_document,
    fast_rows,
    load,
    refuse_duplicate_keys,
)
from service.deps import state
from service.problems import problem_for
from service.responses import NUMPY_JSON, body_schema, problem_responses

router = APIRouter()


def instance_rows(instances: list[schemas.Instance]) -> FloatArray:
    """The measurements (n, 4) of validated instances, in centimetres."""
    return np.array(
        [(i.sepal_length, i.sepal_width, i.petal_length, i.petal_width) for i in instances],
        dtype=np.float64,
    )


def predict_body(request: Request, body: bytes) -> bytes:
    """The /predict answer to a raw body."""
    st = state(request)
    limit = st.settings.max_instances
    check_media_type(request)
    rows, version = request_rows(body, limit)
    if len(rows) == 1:  # the common request: NumPy only where the bits need it
        row = rows[0] if isinstance(rows, list) else rows[0].tolist()
        served, probabilities, k = inference.predict_row(st.registry, row, version)
        return prediction_json(served, probabilities, k)
    raw = np.asarray(rows, dtype=np.float64)
    inference.check_rows(raw.shape[0], limit)
    served, o_s, index = inference.predict(st.registry, raw, version)
    return predictions_json(served, o_s, index)


def request_rows(body: bytes, limit: int) -> tuple[Rows, str | None]:
    """The measurements and model_version of a body: a fast path for the common body (its
    bytes for many rows, orjson's document for a few), else the schema.

    Many rows read from the bytes are at most ``limit`` and cost a few passes over them;
    any other body is held to its budget before orjson builds anything.
    """
    if len(body) > LARGE_BODY and (many := fast_rows(body, limit)) is not None:
        return many
    check_budget(body, limit, "IRIS_MAX_INSTANCES")
    document = load(body)
    fast = fast_document(document.tree, body) if document.exact else None
    if fast is not None:
        return fast
    check_object_sizes(document.tree)
    refuse_duplicate_keys(body)
    check_lengths(document.tree, ("instances",), limit, "IRIS_MAX_INSTANCES")
    parsed = document.validate(schemas.PredictRequest)
    return instance_rows(parsed.instances), parsed.model_version


# One prediction's JSON up to its first probability, by class index; the probabilities are
# spliced in as orjson prints them (the shortest text that reads back to the same float64).
_PREDICTION_HEADS = [
    b'{"label":"%s","class_index":%d,"probabilities":{"%s":'
    % (label.encode(), k, CLASSES[0].encode())
    for k, label in enumerate(CLASSES)
]
_BETWEEN = [b',"%s":' % label.encode() for label in CLASSES[1:]]
_HEADS = np.array(_PREDICTION_HEADS, dtype=object)  # taken by an array of class indices


def prediction_json(version: str, o_s: list[float], k: int) -> bytes:
    """:func:`predictions_json` of one row: probabilities o_s (3,), class index k."""
    p0, p1, p2 = orjson.dumps(o_s)[1:-1].split(b",")
    second, third = _BETWEEN
    return b'{"model_version":%s,"predictions":[%s%s%s%s%s%s}}]}' % (
        orjson.dumps(version),
        _PREDICTION_HEADS[k],
        p0,
        second,
        p1,
        third,
        p2,
    )


def predictions_json(version: str, o_s: FloatArray, index: IntArray) -> bytes:
    """The /predict answer for probabilities o_s (n, 3), written without per-row dicts.

    Equal, once parsed, to orjson.dumps({"model_version": ..., "predictions": [{"label",
    "class_index", "probabilities": {...}}, ...]}), at a fraction of its cost for large
    batches: every row's pieces (its head by class, three probabilities as orjson prints a
    column of them, the separators) are laid into one list by slice, with no Python step
    per row, and joined once.
    """
    head = b'{"model_version":%s,"predictions":[' % orjson.dumps(version)
    n = len(index)
    if n == 0:
        return head + b"]}"
    second, third = _BETWEEN
    parts = [b"", b"", second, b"", third, b"", b"}},"] * n
    parts[0::7] = _HEADS[index].tolist()
    columns = orjson.dumps(np.ascontiguousarray(o_s.T), option=NUMPY_JSON)[2:-2].split(b"],[")
    for offset, column in zip((1, 3, 5), columns, strict=True):
        parts[offset::7] = column.split(b",")
    parts[-1] = b"}}"  # the last row's: no comma after it
    return head + b"".join(parts) + b"]}"


inference.hot_route(
    router,
    "/predict",
    predict_body,
    problem_for,
    response_model=schemas.PredictResponse,
    openapi_extra=body_schema(schemas.PredictRequest),
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
    summary="Species and probabilities for flower measurements",
)
