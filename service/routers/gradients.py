"""POST /gradients: the loss and every quantity of the backpropagation, for inputs and labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request

from model.data import CLASSES
from model.network import raw_input_gradient
from service import inference, schemas
from service.body import parse_json
from service.deps import state
from service.errors import ProblemError
from service.problems import problem_for
from service.responses import NUMPY_JSON, body_schema, problem_responses
from service.routers.predict import instance_rows

router = APIRouter()


def gradients_body(request: Request, raw_body: bytes) -> bytes:
    st = state(request)
    body = parse_json(
        request,
        raw_body,
        schemas.GradientsRequest,
        rows=st.settings.max_instances,
        paths=("instances", "labels"),
        setting="IRIS_MAX_INSTANCES",
    )
    stored = inference.served_model(st.registry, body.model_version)
    model = stored.model
    check_answer_size(
        len(body.instances),
        model.params.hidden_units,
        body.reduction,
        set(body.include),
        st.settings.max_answer_values,
    )
    y = np.array(
        [CLASSES.index(label) if isinstance(label, str) else label for label in body.labels],
        dtype=np.int64,
    )
    cache, value, grads = inference.gradients(
        stored, instance_rows(body.instances), y, body.reduction
    )
    answer: dict[str, Any] = {
        "model_version": stored.version,
        "reduction": body.reduction,
        "loss": value if body.reduction == "none" else float(value),
        "gradients": grads.params.arrays(),
    }
    if "activations" in body.include:
        answer["activations"] = {
            "x": cache.X,
            "h_a": cache.h_a,
            "h_s": cache.h_s,
            "o_a": cache.o_a,
            "o_s": cache.o_s,
        }
    if "intermediates" in body.include:
        answer["intermediates"] = {"do_a": grads.do_a, "dh_s": grads.dh_s, "dh_a": grads.dh_a}
    if "input" in body.include:
        answer["input_gradients"] = {
            "x": grads.dx,
            "measurements": raw_input_gradient(grads.dx, model.standardizer),
        }
    return orjson.dumps(answer, option=NUMPY_JSON)


def answer_values(n: int, H: int, reduction: str, include: set[str]) -> int:
    """How many numbers a /gradients answer holds, from its shapes alone."""
    per_sample = reduction == "none"
    count = (8 * H + 3) * (n if per_sample else 1)  # dW1, db1, dW2, db2 (per row for none)
    count += n if per_sample else 1  # the loss
    if "activations" in include:
        count += n * (4 + H + H + 3 + 3)  # x, h_a, h_s, o_a, o_s
    if "intermediates" in include:
        count += n * (3 + H + H)  # do_a, dh_s, dh_a
    if "input" in include:
        count += n * (4 + 4)  # dx, and in centimetres
    return count


def check_answer_size(n: int, H: int, reduction: str, include: set[str], limit: int) -> None:
    """Refuse, before any work, a /gradients answer of more than ``limit`` numbers."""
    count = answer_values(n, H, reduction, include)
    if count > limit:
        raise ProblemError(
            422,
            f"the answer would hold {count} numbers ({n} instances, {H} hidden units, "
            f"reduction {reduction!r}, include {sorted(include)}), more than the limit of "
            f"{limit} (IRIS_MAX_ANSWER_VALUES): send fewer instances, use reduction 'mean' "
            "or 'sum' instead of 'none', or include fewer parts",
        )


inference.hot_route(
    router,
    "/gradients",
    gradients_body,
    problem_for,
    response_model=schemas.GradientsResponse,
    openapi_extra=body_schema(schemas.GradientsRequest),
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
    summary="Loss and exact backpropagation gradients for inputs and labels",
)
