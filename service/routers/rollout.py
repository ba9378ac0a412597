"""The rollout over HTTP: the routing (canary and shadow), its history, feedback, monitoring.

Every call runs on the store threads of service/routers/train.py (never the pool of large
predictions), and does its work in service/rollout/control.py.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from service import native, schemas
from service.body import parse_json
from service.deps import AppState, State, Token, state
from service.responses import body_schema, json_response, problem_responses
from service.rollout import control
from service.rollout.plan import Canary, Shadow
from service.routers.train import in_jobs_thread

router = APIRouter(tags=["rollout"])


def routing_view(st: State) -> dict[str, Any]:
    return st.rollout.plan().view(control.stable_version(st))


@router.get(
    "/routing",
    response_model=schemas.Routing,
    responses=problem_responses(503),
    summary="The traffic split: stable, the canary and its rule, the shadow",
)
async def get_routing(request: Request) -> Response:
    return json_response(await in_jobs_thread(request, routing_view, state(request)))


def put_routing_body(request: Request, raw_body: bytes) -> dict[str, Any]:
    st = state(request)
    body = parse_json(
        request,
        raw_body,
        schemas.RoutingRequest,
        rows=1,
        paths=(),
        setting="a routing plan holds no rows",
        empty_ok=True,
    )
    canary = Canary(**body.canary.model_dump()) if body.canary else None
    shadow = Shadow(body.shadow.version) if body.shadow else None
    return control.set_routing(st, canary, shadow, body.revision)


@router.put(
    "/routing",
    response_model=schemas.Routing,
    dependencies=[Token],
    openapi_extra=body_schema(schemas.RoutingRequest, required=False),
    responses=problem_responses(400, 401, 409, 413, 415, 422, 503),
    summary="Set the canary and the shadow (the whole plan but stable; token required)",
)
async def put_routing(request: Request) -> Response:
    body = await request.body()
    return json_response(await in_jobs_thread(request, put_routing_body, request, body))


@router.get(
    "/routing/history",
    response_model=schemas.RoutingHistory,
    responses=problem_responses(422, 503),
    summary="Every routing change, promotion and rollback, oldest first, with its reason",
)
async def routing_history(
    request: Request, st: AppState, limit: int = Query(1000, ge=1, le=1000)
) -> Response:
    return json_response({"history": await in_jobs_thread(request, st.rollout.history, limit)})


def feedback_body(request: Request, raw_body: bytes) -> dict[str, Any]:
    st = state(request)
    limit = st.settings.max_instances
    body = parse_json(
        request,
        raw_body,
        schemas.FeedbackRequest,
        rows=limit,
        paths=("instances", "labels"),
        setting="IRIS_MAX_INSTANCES",
    )
    rows = native.instance_rows(body.instances)
    y = control.labels_of(body.labels)
    return control.feedback(st, body.model_version, rows, y)


@router.post(
    "/feedback",
    response_model=schemas.FeedbackResponse,
    dependencies=[Token],
    openapi_extra=body_schema(schemas.FeedbackRequest),
    responses=problem_responses(400, 401, 413, 415, 422, 503),
    summary="True species of rows a version answered: its live accuracy, and the rule "
    "(token required)",
)
async def feedback(request: Request) -> Response:
    body = await request.body()
    return json_response(await in_jobs_thread(request, feedback_body, request, body))


@router.get(
    "/monitoring",
    response_model=schemas.Monitoring,
    responses=problem_responses(503),
    summary="Per version: rows served, live accuracy, shadow agreement; drift of the inputs",
)
async def monitoring(request: Request) -> Response:
    return json_response(await in_jobs_thread(request, control.monitoring, state(request)))
