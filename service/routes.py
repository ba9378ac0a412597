"""The native HTTP API. Each route validates, calls model/ (or the job store), serializes."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.to_thread
import numpy as np
import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from model.data import CLASSES, Dataset, from_rows, load_iris
from model.errors import ModelStoreError
from model.network import backward, forward, loss, raw_input_gradient
from model.persistence import StoredModel, check_version_id
from model.train import Hyperparameters
from service import metrics, schemas
from service.body import (
    check_budget,
    check_lengths,
    check_media_type,
    check_object_sizes,
    fast_document,
    load,
    parse_json,
    refuse_duplicate_keys,
)
from service.deps import require_token, state
from service.jobs import JobConflictError, JobSpec
from service.problems import PROBLEM_JSON, ProblemError, problem_for, public
from service.registry import Registry

router = APIRouter()
# Bodies above this size are validated and computed in the thread pool, so a large
# request never holds the event loop; small ones skip the thread hop.
INLINE_BODY_BYTES = 16 * 1024
NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY
BodyHandler = Callable[[Request, bytes], bytes]
JOB_THREADS = 8
T = TypeVar("T")


class HotRoute(NamedTuple):
    """A route the app's edge answers itself: the body handler, and how its errors look."""

    handler: BodyHandler
    errors: Callable[[Request, Exception], Response]


async def run_sized(handler: BodyHandler, request: Request, body: bytes) -> bytes:
    """Run a body handler inline for a small plain body, in the thread pool otherwise (a
    compressed body may inflate to many times its size; a pinned version may need loading
    from disk)."""
    if len(body) > INLINE_BODY_BYTES or any(
        name == b"content-encoding" for name, _ in request.scope["headers"]
    ):
        return await run_in_threadpool(handler, request, body)
    token = _inline.set(True)
    try:
        return handler(request, body)
    except NotLoadedError:
        pass
    finally:
        _inline.reset(token)
    return await run_in_threadpool(handler, request, body)


_inline: ContextVar[bool] = ContextVar("inline", default=False)


class NotLoadedError(Exception):
    """A handler running on the event loop needs a version loaded from disk."""


def served_model(registry: Registry, version: str | None) -> StoredModel:
    """The model to answer with; never loaded from disk on the event loop."""
    stored = registry.cached(version)
    if stored is None:
        if _inline.get():
            raise NotLoadedError
        stored = registry.get(version)
    return stored


def jobs_limiter(request: Request) -> anyio.CapacityLimiter:
    """The threads for job-store calls: never the default pool that large /predict bodies
    use, so a locked jobs database cannot delay a prediction."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "jobs_limiter", None)
    if limiter is None:
        limiter = request.app.state.jobs_limiter = anyio.CapacityLimiter(JOB_THREADS)
    return limiter


async def in_jobs_thread(request: Request, call: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(call, *args, limiter=jobs_limiter(request))


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content, option=NUMPY_JSON), status, headers, "application/json")


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem documents a route may answer with."""
    described = {
        400: "the body is not JSON",
        401: "missing or wrong bearer token",
        404: "unknown model version or job",
        409: "conflicting state (a job is running, the version is corrupt, the job ended)",
        413: "body over IRIS_MAX_BODY_BYTES",
        415: "the body is not sent as application/json",
        422: "the body breaks a rule; the detail names the fields",
        503: "no model is loaded yet, or the jobs database is unavailable",
        507: "the model store cannot be written",
    }
    return {
        code: {
            "description": described[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for code in codes
    }


def body_schema(model: type[Any], required: bool = True) -> dict[str, Any]:
    """openapi_extra for a route that reads its raw body itself."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": ref}}}}


def check_rows(n: int, limit: int, field: str) -> None:
    if n > limit:
        raise ProblemError(
            422, f"{field}: {n} rows, more than the limit of {limit} (IRIS_MAX_INSTANCES)"
        )


def measurements(instances: list[schemas.Instance]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array(
        [(i.sepal_length, i.sepal_width, i.petal_length, i.petal_width) for i in instances],
        dtype=np.float64,
    )


# -- predict -------------------------------------------------------------------------------


# One prediction's JSON up to its first probability, by class index; the probabilities are
# spliced in as orjson prints them (the shortest text that reads back to the same float64).
_PREDICTION_HEADS = [
    b'{"label":"%s","class_index":%d,"probabilities":{"%s":'
    % (label.encode(), k, CLASSES[0].encode())
    for k, label in enumerate(CLASSES)
]
_BETWEEN = [b',"%s":' % label.encode() for label in CLASSES[1:]]


def predictions_json(version: str, o_s: np.ndarray[Any, Any]) -> bytes:
    """The /predict answer for probabilities o_s (n, 3), written without per-row dicts.

    Equal, once parsed, to orjson.dumps({"model_version": ..., "predictions": [{"label",
    "class_index", "probabilities": {...}}, ...]}), at a third of its cost for large batches.
    """
    index = o_s.argmax(axis=1)
    metrics.count_predictions(index)
    rows = orjson.dumps(o_s, option=NUMPY_JSON)[2:-2].split(b"],[")
    second, third = _BETWEEN
    parts = []
    for k, row in zip(index.tolist(), rows, strict=True):
        p0, p1, p2 = row.split(b",")
        parts.append(b"".join((_PREDICTION_HEADS[k], p0, second, p1, third, p2, b"}}")))
    head = b'{"model_version":%s,"predictions":[' % orjson.dumps(version)
    return head + b",".join(parts) + b"]}"


def predict_rows(stored: StoredModel, raw: np.ndarray[Any, Any]) -> bytes:
    model = stored.model
    return predictions_json(
        stored.version, forward(model.params, model.standardizer.transform(raw)).o_s
    )


def predict_body(request: Request, body: bytes) -> bytes:
    st = state(request)
    limit = st.settings.max_instances
    check_media_type(request)
    check_budget(body, limit, "IRIS_MAX_INSTANCES")
    document = load(body)
    fast = fast_document(document.tree, body) if document.exact else None
    if fast is not None:
        raw, version = fast
        check_rows(raw.shape[0], limit, "instances")
    else:
        check_object_sizes(document.tree)
        refuse_duplicate_keys(body)
        check_lengths(document.tree, ("instances",), limit, "IRIS_MAX_INSTANCES")
        parsed = document.validate(schemas.PredictRequest)
        raw, version = measurements(parsed.instances), parsed.model_version
    return predict_rows(served_model(st.registry, version), raw)


@router.post(
    "/predict",
    response_model=schemas.PredictResponse,
    openapi_extra=body_schema(schemas.PredictRequest),
    responses=problems(400, 404, 409, 413, 415, 422, 503),
    summary="Species and probabilities for flower measurements",
)
async def predict(request: Request) -> Response:
    # Served by the app's edge (HOT_ROUTES) without this router; kept for the
    # OpenAPI document and for an app mounted without that middleware.
    content = await run_sized(predict_body, request, await request.body())
    return Response(content, media_type="application/json")


# -- gradients -----------------------------------------------------------------------------


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
    stored = served_model(st.registry, body.model_version)
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
    cache = forward(model.params, model.standardizer.transform(measurements(body.instances)))
    value = loss(cache, y, body.reduction)
    grads = backward(model.params, cache, y, body.reduction)
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


@router.post(
    "/gradients",
    response_model=schemas.GradientsResponse,
    openapi_extra=body_schema(schemas.GradientsRequest),
    responses=problems(400, 404, 409, 413, 415, 422, 503),
    summary="Loss and exact backpropagation gradients for inputs and labels",
)
async def gradients(request: Request) -> Response:
    content = await run_sized(gradients_body, request, await request.body())
    return Response(content, media_type="application/json")


# -- training jobs -------------------------------------------------------------------------


def start_job(request: Request, raw_body: bytes) -> dict[str, Any]:
    st = state(request)
    body = parse_json(
        request,
        raw_body,
        schemas.TrainRequest,
        rows=st.settings.max_train_rows,
        paths=("dataset.samples",),
        setting="IRIS_MAX_TRAIN_ROWS",
        empty_ok=True,
    )
    hp = body.hyperparameters.model_dump()
    Hyperparameters(**hp)  # the model core's own checks, before any work
    dataset: Dataset
    if body.dataset is None:
        dataset, source = load_iris(), "iris"
    else:
        dataset = from_rows(sample.model_dump() for sample in body.dataset.samples)
        source = "request"
    spec = JobSpec(
        hyperparameters=hp,
        dataset={"source": source, "rows": len(dataset)},
        activate=body.activate,
        min_validation_accuracy=body.min_validation_accuracy,
    )
    try:
        job = st.jobs.create(spec)
    except JobConflictError:
        metrics.JOBS.labels(outcome="refused").inc()
        raise
    st.launcher.launch(job["job_id"], spec, dataset)
    metrics.JOBS.labels(outcome="started").inc()
    return job


@router.post(
    "/train",
    status_code=202,
    response_model=schemas.Job,
    dependencies=[Depends(require_token)],
    openapi_extra=body_schema(schemas.TrainRequest, required=False),
    responses=problems(400, 401, 409, 413, 415, 422, 503),
    summary="Start a training job (token required)",
)
async def train(request: Request) -> Response:
    job = await in_jobs_thread(request, start_job, request, await request.body())
    return json_response(job, 202, {"Location": f"/train/{job['job_id']}"})


@router.get(
    "/train",
    response_model=schemas.JobList,
    responses=problems(422),
    summary="Recent training jobs, newest first",
)
async def list_jobs(request: Request, limit: int | None = Query(None, ge=1, le=1000)) -> Response:
    st = state(request)
    jobs = await in_jobs_thread(request, st.jobs.recent, limit or st.settings.jobs_listed)
    return json_response({"jobs": jobs})


@router.get(
    "/train/{job_id}",
    response_model=schemas.Job,
    responses=problems(404, 422),
    summary="A training job: status, progress, metrics, resulting version",
)
async def get_job(request: Request, job_id: str) -> Response:
    job = await in_jobs_thread(request, state(request).jobs.get, valid_job_id(job_id))
    return json_response(job)


@router.post(
    "/train/{job_id}/cancel",
    status_code=202,
    response_model=schemas.Job,
    dependencies=[Depends(require_token)],
    responses=problems(401, 404, 409),
    summary="Cancel a queued or running job (token required); its record stays readable",
)
async def cancel_job(request: Request, job_id: str) -> Response:
    jobs = state(request).jobs
    return json_response(
        await in_jobs_thread(request, jobs.request_cancel, valid_job_id(job_id)), 202
    )


@router.delete(
    "/train/{job_id}",
    status_code=204,
    response_class=Response,
    dependencies=[Depends(require_token)],
    responses={204: {"description": "the record is gone"}, **problems(401, 404, 409)},
    summary="Delete an ended job's record (token required; 409 while it runs)",
)
async def delete_job(request: Request, job_id: str) -> Response:
    await in_jobs_thread(request, state(request).jobs.delete, valid_job_id(job_id))
    return Response(status_code=204)


def valid_job_id(job_id: str) -> str:
    if len(job_id) != 32 or any(c not in "0123456789abcdef" for c in job_id):
        raise ProblemError(404, f"no training job {job_id[:80]!r}: job ids are 32 hex digits")
    return job_id


# -- models --------------------------------------------------------------------------------


def current_or_none(request: Request) -> str | None:
    try:
        return state(request).store.current()
    except ModelStoreError:
        return None


def summary(request: Request, version: str, current: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"version": version, "active": version == current}
    try:
        meta = state(request).store.summary(version)  # cached, without the history
    except ModelStoreError as error:
        return entry | {"error": public(str(error))}
    return entry | {
        "created_at": meta.get("created_at"),
        "hidden_units": meta.get("hidden_units"),
        "metrics": meta.get("metrics"),
    }


@router.get("/models", response_model=schemas.ModelList, summary="Stored model versions")
def list_models(request: Request) -> Response:
    st = state(request)
    current = current_or_none(request)
    versions = reversed(st.store.versions())
    active = st.registry.active
    return json_response(
        {
            "current": current,
            "serving": active.version if active else None,
            "models": [summary(request, v, current) for v in versions],
        }
    )


@router.get(
    "/models/{version}",
    responses=problems(404, 409),
    summary="One version's metadata: hyperparameters, metrics, history",
)
def get_model(request: Request, version: str) -> Response:
    st = state(request)
    meta = st.store.metadata(check_version_id(version))
    return json_response(meta | {"active": version == current_or_none(request)})


@router.post(
    "/models/{version}/activate",
    dependencies=[Depends(require_token)],
    responses=problems(401, 404, 409, 507),
    summary="Make a stored version the served one (roll forward or back; token required)",
)
def activate_model(request: Request, version: str) -> Response:
    st = state(request)
    st.store.activate(check_version_id(version))
    st.registry.refresh()
    return json_response({"current": version, "serving": version})


# -- health and metrics --------------------------------------------------------------------


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", responses=problems(503), summary="Readiness: a model is loaded")
async def readyz(request: Request) -> Response:
    st = state(request)
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


@router.get("/limits", response_model=schemas.Limits, summary="The request limits in force")
def limits(request: Request) -> Response:
    settings = state(request).settings
    return json_response(
        {
            "max_instances": settings.max_instances,
            "max_body_bytes": settings.max_body_bytes,
            "max_train_rows": settings.max_train_rows,
        }
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus(request: Request) -> Response:
    content, media_type = metrics.render()
    return Response(content, media_type=media_type)


# The hot path: (method, path) -> body handler, answered by the app's edge middleware
# before FastAPI's routing, which would otherwise cost more than the model.
HOT_ROUTES: dict[tuple[str, str], HotRoute] = {
    ("POST", "/predict"): HotRoute(predict_body, problem_for)
}
