"""POST /gradients: the loss and every quantity of the backpropagation, for inputs and labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import Request

from model.data import CLASSES
from model.network import raw_input_gradient
from service import native, schemas
from service.body import check_media_type
from service.deps import state
from service.problems import problem_for
from service.responses import NUMPY_JSON, body_schema, problem_responses
from service.routing import HotRoute


def gradients_body(request: Request, raw_body: bytes) -> bytes:
    """The /gradients answer to a raw body: decode, compute, encode."""
    st = state(request)
    check_media_type(request)
    body = native.gradients_input(raw_body, st.inference.max_instances)
    y = np.array(
        [CLASSES.index(label) if isinstance(label, str) else label for label in body.labels],
        dtype=np.int64,
    )
    include = frozenset(body.include)
    rows = native.instance_rows(body.instances)
    stored, cache, value, grads = st.inference.gradients(
        rows, y, body.model_version, body.reduction, include, headers=request.scope["headers"]
    )
    answer: dict[str, Any] = {
        "model_version": stored.version,
        "reduction": body.reduction,
        "loss": value if body.reduction == "none" else float(value),
        "gradients": grads.params.arrays(),
    }
    if "activations" in include:
        answer["activations"] = {
            "x": cache.X,
            "h_a": cache.h_a,
            "h_s": cache.h_s,
            "o_a": cache.o_a,
            "o_s": cache.o_s,
        }
    if "intermediates" in include:
        answer["intermediates"] = {"do_a": grads.do_a, "dh_s": grads.dh_s, "dh_a": grads.dh_a}
    if "input" in include:
        answer["input_gradients"] = {
            "x": grads.dx,
            "measurements": raw_input_gradient(grads.dx, stored.model.standardizer),
        }
    return orjson.dumps(answer, option=NUMPY_JSON)


ROUTE = HotRoute(
    "POST",
    "/gradients",
    gradients_body,
    problem_for,
    {
        "response_model": schemas.GradientsResponse,
        "openapi_extra": body_schema(schemas.GradientsRequest),
        "responses": problem_responses(400, 404, 409, 413, 415, 422, 503),
        "summary": "Loss and exact backpropagation gradients for inputs and labels",
    },
)
