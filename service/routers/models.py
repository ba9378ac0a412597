"""Stored model versions: list, read (metadata, training history), activate (roll forward or
back), delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from model.errors import ModelInUseError, ModelNotFoundError, ModelStoreError
from model.persistence import check_version_id
from service import schemas
from service.deps import AppState, State, Token, state
from service.errors import public
from service.inference import in_compute_pool
from service.responses import json_response, problem_responses
from service.rollout import control

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
    shown = {key: meta.get(key) for key in ("created_at", "hidden_units", "metrics")}
    return entry | shown | provenance(meta)


# What a version records of how it was made; null for versions made before they were kept.
PROVENANCE = ("job_id", "note", "data_sha256")


def provenance(meta: dict[str, Any]) -> dict[str, Any]:
    """The job that made a version, its request's note and the sha256 of its training rows."""
    return {key: meta.get(key) for key in PROVENANCE}


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
    return json_response(meta | provenance(meta) | {"active": version == current_or_none(st)})


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
    control.activated(st, version)  # a canary or shadow of it is stable now: cleared
    return json_response({"current": version, "serving": version})


@router.delete(
    "/models/{version}",
    status_code=204,
    response_class=Response,
    dependencies=[Token],
    responses={
        204: {"description": "the version is gone: its files or rows, and its metadata"},
        **problem_responses(401, 404, 409, 503, 507),
    },
    summary="Delete a stored version (token required; 409 for the current one)",
)
def delete_model(st: AppState, version: str) -> Response:
    check_version_id(version)
    active = st.registry.active
    if active is not None and active.version == version:
        why = (
            "the current version (the one served)"
            if current_or_none(st) == version
            else "served by this worker in place of the current version, which it cannot load"
        )
        raise ModelInUseError(f"version {version} is {why}: activate another version first")
    role = control.routed(st, version)
    if role is not None:
        raise ModelInUseError(
            f"version {version} is the routing's {role}: clear it first (PUT /routing)"
        )
    try:
        st.store.delete(version)
    except ModelNotFoundError:
        st.registry.forget(version)  # deleted elsewhere: not served from this cache either
        raise
    st.registry.forget(version)  # a request pinned to it gets 404 from now on
    return Response(status_code=204)
