"""Training jobs: start, list, read, cancel (AIP-136 custom method), delete.

Job-store calls run on their own few threads (:func:`in_jobs_thread`), never the pool that
large /predict bodies use, so a busy or locked jobs database cannot delay a prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from model.data import Dataset, from_rows, load_iris
from model.train import Hyperparameters
from service import metrics, schemas
from service.body import parse_json
from service.deps import AppState, Token, state
from service.errors import ProblemError
from service.job_store import JobConflictError, JobSpec
from service.responses import body_schema, json_response, problem_responses

router = APIRouter()
JOB_THREADS = 8
T = TypeVar("T")


def jobs_limiter(request: Request) -> anyio.CapacityLimiter:
    """The threads for job-store calls: never the default pool that large /predict bodies
    use, so a locked jobs database cannot delay a prediction."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "jobs_limiter", None)
    if limiter is None:
        limiter = request.app.state.jobs_limiter = anyio.CapacityLimiter(JOB_THREADS)
    return limiter


async def in_jobs_thread(request: Request, call: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(call, *args, limiter=jobs_limiter(request))


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
        note=body.note,
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
    dependencies=[Token],
    openapi_extra=body_schema(schemas.TrainRequest, required=False),
    responses=problem_responses(400, 401, 409, 413, 415, 422, 503),
    summary="Start a training job (token required)",
)
async def train(request: Request) -> Response:
    job = await in_jobs_thread(request, start_job, request, await request.body())
    return json_response(job, 202, {"Location": f"/train/{job['job_id']}"})


@router.get(
    "/train",
    response_model=schemas.JobList,
    responses=problem_responses(422),
    summary="Recent training jobs, newest first",
)
async def list_jobs(
    request: Request, st: AppState, limit: int | None = Query(None, ge=1, le=1000)
) -> Response:
    jobs = await in_jobs_thread(request, st.jobs.recent, limit or st.settings.jobs_listed)
    return json_response({"jobs": jobs})


@router.get(
    "/train/{job_id}",
    response_model=schemas.Job,
    responses=problem_responses(404, 422),
    summary="A training job: status, progress, metrics, resulting version",
)
async def get_job(request: Request, st: AppState, job_id: str) -> Response:
    job = await in_jobs_thread(request, st.jobs.get, valid_job_id(job_id))
    return json_response(job)


@router.post(
    "/train/{job_id}/cancel",
    status_code=202,
    response_model=schemas.Job,
    dependencies=[Token],
    responses=problem_responses(401, 404, 409),
    summary="Cancel a queued or running job (token required); its record stays readable",
)
async def cancel_job(request: Request, st: AppState, job_id: str) -> Response:
    jobs = st.jobs
    return json_response(
        await in_jobs_thread(request, jobs.request_cancel, valid_job_id(job_id)), 202
    )


@router.delete(
    "/train/{job_id}",
    status_code=204,
    response_class=Response,
    dependencies=[Token],
    responses={204: {"description": "the record is gone"}, **problem_responses(401, 404, 409)},
    summary="Delete an ended job's record (token required; 409 while it runs)",
)
async def delete_job(request: Request, st: AppState, job_id: str) -> Response:
    await in_jobs_thread(request, st.jobs.delete, valid_job_id(job_id))
    return Response(status_code=204)


def valid_job_id(job_id: str) -> str:
    if len(job_id) != 32 or any(c not in "0123456789abcdef" for c in job_id):
        raise ProblemError(404, f"no training job {job_id[:80]!r}: job ids are 32 hex digits")
    return job_id
