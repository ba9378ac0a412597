"""POST /predict: measurements in, species and probabilities out.

Its path, from the socket to NumPy and back: service/server.py (the HTTP protocol) ->
service/edge/ (metrics, limits, then this route's handler from the app's table, before any
routing) -> :func:`predict_body` here -> service/native.py (the body to rows) ->
service/inference.py (the row limit, the model, NumPy, the counters) -> the answer's JSON,
written here.
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import Request

from model.data import CLASSES
from model.network import FloatArray, IntArray
from service import native, schemas
from service.body import check_media_type
from service.deps import state
from service.inference import OneRow
from service.problems import problem_for
from service.responses import NUMPY_JSON, body_schema, problem_responses
from service.routing import HotRoute


def predict_body(request: Request, body: bytes) -> bytes:
    """The /predict answer to a raw body: decode, predict, encode."""
    st = state(request)
    check_media_type(request)
    rows, version = native.predict_input(body, st.inference.max_instances)
    predicted = st.inference.predict(rows, version, request.scope["headers"])
    if isinstance(predicted, OneRow):
        return prediction_json(*predicted)
    return predictions_json(*predicted)


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


ROUTE = HotRoute(
    "POST",
    "/predict",
    predict_body,
    problem_for,
    {
        "response_model": schemas.PredictResponse,
        "openapi_extra": body_schema(schemas.PredictRequest),
        "responses": problem_responses(400, 404, 409, 413, 415, 422, 503),
        "summary": "Species and probabilities for flower measurements",
    },
)
