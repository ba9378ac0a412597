"""Stored model versions: list, read, activate (roll forward or back)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from model.errors import ModelStoreError
from model.persistence import check_version_id
from service import schemas
from service.deps import AppState, State, Token
from service.errors import public
from service.responses import json_response, problem_responses

router = APIRouter()


def current_or_none(st: State) -> str | None:
    try:
        return st.store.current()
    except ModelStoreError:
        return None


def summary(st: State, version: str, current: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"version": version, "active": version == current}
    try:
        meta = st.store.summary(version)  # cached, without the history
    except ModelStoreError as error:
        return entry | {"error": public(str(error))}
    return entry | {
        "created_at": meta.get("created_at"),
        "hidden_units": meta.get("hidden_units"),
        "metrics": meta.get("metrics"),
    }


@router.get("/models", response_model=schemas.ModelList, summary="Stored model versions")
def list_models(st: AppState) -> Response:
    current = current_or_none(st)
    versions = reversed(st.store.versions())
    active = st.registry.active
    return json_response(
        {
            "current": current,
            "serving": active.version if active else None,
            "models": [summary(st, v, current) for v in versions],
        }
    )


@router.get(
    "/models/{version}",
    responses=problem_responses(404, 409),
    summary="One version's metadata: hyperparameters, metrics, history",
)
def get_model(st: AppState, version: str) -> Response:
    meta = st.store.metadata(check_version_id(version))
    return json_response(meta | {"active": version == current_or_none(st)})


@router.post(
    "/models/{version}/activate",
    dependencies=[Token],
    responses=problem_responses(401, 404, 409, 507),
    summary="Make a stored version the served one (roll forward or back; token required)",
)
def activate_model(st: AppState, version: str) -> Response:
    st.store.activate(check_version_id(version))
    st.registry.refresh()
    return json_response({"current": version, "serving": version})
