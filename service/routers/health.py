"""Liveness, readiness, the limits in force and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from service import metrics, schemas
from service.deps import AppState, Token
from service.errors import ProblemError, public
from service.responses import json_response, problem_responses

router = APIRouter()


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", responses=problem_responses(503), summary="Readiness: a model is loaded")
async def readyz(st: AppState) -> Response:
    registry, backend = st.registry, st.backend
    if registry.active is None:
        raise ProblemError(
            503, f"not ready: {public(registry.problem or 'no model is loaded yet')}"
        )
    return json_response(
        {
            "status": "ready",
            "model_version": registry.active.version,
            "problem": public(registry.problem) if registry.problem else None,
            "backend": backend.name,
            "schema_version": backend.schema_version,
        }
    )


@router.get(
    "/auth",
    status_code=204,
    response_class=Response,
    dependencies=[Token],
    responses={204: {"description": "the token is valid"}, **problem_responses(401)},
    summary="Check the bearer token: 204 when it is valid, 401 otherwise; changes nothing",
)
async def check_token() -> Response:
    return Response(status_code=204)


@router.get("/limits", response_model=schemas.Limits, summary="The request limits in force")
def limits(st: AppState) -> Response:
    settings = st.settings
    return json_response(
        {
            "max_instances": settings.max_instances,
            "max_body_bytes": settings.max_body_bytes,
            "max_train_rows": settings.max_train_rows,
        }
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus(st: AppState) -> Response:
    content, media_type = metrics.render()
    return Response(content, media_type=media_type)
