"""Stored model versions: list, read (metadata, training history), activate (roll forward or
back)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from model.errors import ModelStoreError
from model.persistence import check_version_id
from service import schemas
from service.deps import AppState, State, Token, state
from service.errors import public
from service.inference import in_compute_pool
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
    summary="One version's metadata: hyperparameters, metrics (its history: /history)",
)
def get_model(st: AppState, version: str) -> Response:
    # The store's summary: model.json without the per-epoch history, which a long run makes
    # large (10,000 epochs: 1.4 MB, 33 ms to read and parse); GET .../history serves it.
    meta = st.store.summary(check_version_id(version))
    return json_response(meta | {"active": version == current_or_none(st)})


class History(BaseModel):
    model_version: str
    history: list[dict[str, Any]] = Field(
        description="one entry per epoch, in order: epoch, epochs, train_loss, "
        "train_accuracy, validation_loss and validation_accuracy (null without a "
        "validation part)"
    )


@router.get(
    "/models/{version}/history",
    response_model=History,
    responses=problem_responses(404, 409),
    summary="One version's training history: loss and accuracy after every epoch",
)
async def get_history(request: Request, version: str) -> Response:
    # A long history takes tens of MB to parse: read in the bounded compute pool, so that
    # many requests at once cannot each hold one.
    return await in_compute_pool(history_view, state(request), check_version_id(version))


def history_view(st: State, version: str) -> Response:
    meta = st.store.metadata(version)
    return json_response({"model_version": version, "history": meta.get("history", [])})


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
