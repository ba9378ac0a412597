"""Read-only views for any client (the dashboard among them): live job events, the shipped
data, a version's parameters, its evaluation on the shipped data, and its decision regions.

Every number comes from model/: the routes only choose inputs and serialize.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal

import anyio.to_thread
import numpy as np
import orjson
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from model.data import CLASSES, FEATURES, Dataset, load_iris
from model.network import predict_proba_chunked
from model.persistence import StoredModel, check_version_id
from model.train import evaluate
from service.admission import admission_of
from service.deps import state
from service.errors import ProblemError
from service.inference import in_compute_pool
from service.job_feed import JobFeeds
from service.job_store import TERMINAL
from service.responses import json_response, problem_responses
from service.routers.train import jobs_limiter, valid_job_id
from service.server import GOING_AWAY

router = APIRouter()

KEEP_ALIVE_SECONDS = 15.0  # a comment line this often keeps proxies from closing the stream
MAX_STEPS = 100  # decision-region grids are at most MAX_STEPS x MAX_STEPS
MARGIN = 0.1  # region axes extend the data's range by this fraction on each side

Feature = Literal["sepal_length", "sepal_width", "petal_length", "petal_width"]
Fixed = Annotated[
    float | None,
    Query(
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="cm; used when this feature is not an axis (default: the data's mean)",
    ),
]
VersionPath = Annotated[
    str, Path(description="a stored version id", examples=["20261128T004614.062920Z-7483c053"])
]


@lru_cache(maxsize=1)
def iris() -> Dataset:
    return load_iris()


# -- response bodies (documented in the OpenAPI schema) --------------------------------------


class FeatureSummary(BaseModel):
    min: float
    max: float
    mean: float


class IrisSample(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float
    species: Literal["setosa", "versicolor", "virginica"]


class DatasetView(BaseModel):
    name: str
    unit: str
    features: list[str]
    classes: list[str]
    summary: dict[str, FeatureSummary]
    samples: list[IrisSample]


class Parameters(BaseModel):
    model_version: str
    hidden_units: int
    W1: list[list[float]] = Field(description="(hidden, 4)")
    b1: list[float] = Field(description="(hidden,)")
    W2: list[list[float]] = Field(description="(3, hidden)")
    b2: list[float] = Field(description="(3,)")
    mean: list[float] = Field(description="training mean of each feature (cm)")
    std: list[float] = Field(description="training standard deviation of each feature (cm)")


class Evaluation(BaseModel):
    model_version: str
    data: str
    rows: int
    loss: float = Field(description="mean cross-entropy")
    accuracy: float
    classes: list[str]
    confusion_matrix: list[list[int]] = Field(
        description="rows: true species, columns: predicted species, in the order of classes"
    )


class Axis(BaseModel):
    feature: str
    values: list[float] = Field(description="grid coordinates in cm, ascending")


class Regions(BaseModel):
    model_version: str
    x: Axis
    y: Axis
    fixed: dict[str, float] = Field(description="the other two features' values (cm)")
    classes: list[str]
    class_index: list[list[int]] = Field(
        description="predicted class per grid point, indexed [y step][x step]"
    )
    confidence: list[list[float]] = Field(
        description="the predicted class's probability, rounded to 4 decimals"
    )


# -- training job events ---------------------------------------------------------------------


class EventStreamResponse(StreamingResponse):
    """A stream of events that counts, while it is open, as an event stream of its worker
    rather than a request in progress (service/admission.py): ``release`` ends that."""

    media_type = "text/event-stream"
    release: Callable[[], None] = staticmethod(lambda: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One Server-Sent Event: JSON data on a single line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def job_events(request: Request, job: dict[str, Any]) -> AsyncIterator[bytes]:
    """Progress events while the job runs (one per new epoch seen), then an ``end`` event;
    a ``going-away`` event instead when the server shuts down meanwhile.

    It reads its job through the worker's one feed of that job (service/job_feed.py)."""
    seen: tuple[str, int] | None = None
    going_away = request.scope[GOING_AWAY] = asyncio.Event()  # set by the protocol
    yield b"retry: 2000\n\n"
    async for update in job_feeds(request).follow(job, KEEP_ALIVE_SECONDS, going_away):
        if update is None:
            yield b": keep-alive\n\n"
            continue
        job = update
        progress = job["progress"]
        marker = (job["status"], progress["epoch"])
        if marker != seen:
            seen = marker
            point = {"status": job["status"], **progress}
            yield sse("progress", point, f"{job['status']}-{progress['epoch']}")
        if job["status"] in TERMINAL:
            yield sse("end", job, "end")
    if going_away.is_set():  # the server is shutting down: say so, and end the stream now
        yield sse("going-away", {"detail": GOING_AWAY_DETAIL, "job_id": job["job_id"]})


GOING_AWAY_DETAIL = (
    "the server is shutting down; the job goes on: follow it again once the server is back"
)


def job_feeds(request: Request) -> JobFeeds:
    """The worker's feeds of followed jobs (created with the first stream)."""
    feeds: JobFeeds | None = getattr(request.app.state, "job_feeds", None)
    if feeds is None:
        jobs = state(request).jobs
        limiter = jobs_limiter(request)

        async def read(job_id: str) -> dict[str, Any]:
            return await anyio.to_thread.run_sync(jobs.get, job_id, limiter=limiter)

        feeds = request.app.state.job_feeds = JobFeeds(read)
    return feeds


@router.get(
    "/train/{job_id}/events",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: `progress` (data: status, epoch, epochs, train_loss, "
                "train_accuracy, validation_loss, validation_accuracy) each time a new epoch "
                "is seen, then one `end` event whose data is the ended job (or, when the "
                "server shuts down first, one `going-away` event: follow the job again once "
                "it is back); comment lines keep the connection alive"
            ),
            # Each event, as a client (and schemathesis) parses it: an SSE event whose data
            # is one JSON document.
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "required": ["event", "data"],
                        "properties": {
                            "event": {"enum": ["progress", "end"]},
                            "data": {"type": "string", "contentMediaType": "application/json"},
                            "id": {"type": "string"},
                            "retry": {"type": "integer", "minimum": 0},
                        },
                    }
                }
            },
        },
        **problem_responses(404, 503),
    },
    summary="A training job's progress, streamed as Server-Sent Events",
)
async def train_events(request: Request, job_id: str) -> Response:
    valid_job_id(job_id)
    # From here the request counts as a stream (503 past the allowances), before it waits
    # for anything: subscribers never take the place of requests.
    release = admission_of(request.scope).stream(job_id)
    try:
        job = await job_feeds(request).latest(job_id)  # 404 before streaming
    except BaseException:
        release()
        raise
    response = EventStreamResponse(
        job_events(request, job),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.release = release
    return response


# -- data and versions -------------------------------------------------------------------------


def summarise(dataset: Dataset) -> dict[str, dict[str, float]]:
    raw = dataset.raw
    return {
        feature: {
            "min": float(raw[:, k].min()),
            "max": float(raw[:, k].max()),
            "mean": float(raw[:, k].mean()),
        }
        for k, feature in enumerate(FEATURES)
    }


@lru_cache(maxsize=1)
def iris_view() -> bytes:
    data = iris()
    samples = [
        dict(zip(FEATURES, row, strict=True)) | {"species": CLASSES[k]}
        for row, k in zip(data.raw.tolist(), data.y.tolist(), strict=True)
    ]
    view = {
        "name": "iris",
        "unit": "cm",
        "features": list(FEATURES),
        "classes": list(CLASSES),
        "summary": summarise(data),
        "samples": samples,
    }
    return orjson.dumps(view)


@router.get(
    "/datasets/iris",
    response_model=DatasetView,
    summary="The shipped Iris data (150 flowers) with each feature's range and mean",
)
def dataset_iris() -> Response:
    return Response(iris_view(), media_type="application/json")


def stored(request: Request, version: str) -> StoredModel:
    return state(request).registry.get(check_version_id(version))


# The routes below do NumPy work that grows with a stored version's width, and anyone may ask
# for any version (hidden_units is public in GET /models): each runs in the bounded compute
# pool of the large /predict bodies (service.inference), never in anyio's 40 threads, and the
# forward passes over many rows go in chunks (model.network.predict_proba_chunked). Loading a
# version from the store happens there too, off the event loop.


@router.get(
    "/models/{version}/parameters",
    response_model=Parameters,
    responses=problem_responses(404, 409, 503),
    summary="One version's weights, biases and standardisation",
)
async def model_parameters(request: Request, version: VersionPath) -> Response:
    return await in_compute_pool(parameters_view, request, version)


def parameters_view(request: Request, version: str) -> Response:
    found = stored(request, version)
    model = found.model
    return json_response(
        {
            "model_version": found.version,
            "hidden_units": model.params.hidden_units,
            **model.params.arrays(),
            "mean": model.standardizer.mean,
            "std": model.standardizer.std,
        }
    )


@router.get(
    "/models/{version}/evaluation",
    response_model=Evaluation,
    responses=problem_responses(404, 409, 503),
    summary="One version's loss, accuracy and confusion matrix on the shipped Iris data",
)
async def model_evaluation(request: Request, version: VersionPath) -> Response:
    return await in_compute_pool(evaluation_view, request, version)


def evaluation_view(request: Request, version: str) -> Response:
    found = stored(request, version)
    data = iris()
    mean_loss, accuracy = evaluate(found.model, data)  # 150 rows: (150, H) at most 1.2 MB
    predicted = predict_proba_chunked(found.model, data.raw).argmax(axis=1)
    k = len(CLASSES)
    confusion = np.bincount(data.y * k + predicted, minlength=k * k).reshape(k, k)
    return json_response(
        {
            "model_version": found.version,
            "data": "iris",
            "rows": len(data),
            "loss": mean_loss,
            "accuracy": accuracy,
            "classes": list(CLASSES),
            "confusion_matrix": confusion,
        }
    )


def axis_values(feature: str, steps: int) -> list[float]:
    """``steps`` points over the shipped data's range of ``feature``, widened by MARGIN."""
    column = iris().raw[:, FEATURES.index(feature)]
    low, high = float(column.min()), float(column.max())
    pad = MARGIN * (high - low)
    values: list[float] = np.linspace(max(low - pad, 0.01), high + pad, steps).tolist()
    return values


@router.get(
    "/models/{version}/regions",
    response_model=Regions,
    responses=problem_responses(404, 409, 422, 503),
    summary="One version's predicted species over a grid of two features (decision regions)",
)
async def model_regions(
    request: Request,
    version: VersionPath,
    *,
    x: Annotated[Feature, Query(description="feature along the horizontal axis")] = (
        "petal_length"
    ),
    y: Annotated[Feature, Query(description="feature along the vertical axis")] = "petal_width",
    steps: Annotated[
        int, Query(ge=2, le=MAX_STEPS, description="grid points along each axis")
    ] = 40,
    sepal_length: Fixed = None,
    sepal_width: Fixed = None,
    petal_length: Fixed = None,
    petal_width: Fixed = None,
) -> Response:
    if x == y:
        raise ProblemError(422, f"x and y must be two different features, both are {x!r}")
    given = dict(zip(FEATURES, (sepal_length, sepal_width, petal_length, petal_width), strict=True))
    means = summarise(iris())
    fixed: dict[str, float] = {}
    for feature in FEATURES:
        value = given[feature]
        if feature not in (x, y):
            fixed[feature] = means[feature]["mean"] if value is None else value
    return await in_compute_pool(regions_view, request, version, Grid(x, y, steps, fixed))


@dataclass(frozen=True)
class Grid:
    """A decision-region grid: two features as axes, ``steps`` points each, the others fixed."""

    x: str
    y: str
    steps: int
    fixed: dict[str, float]


def regions_view(request: Request, version: str, grid: Grid) -> Response:
    found = stored(request, version)
    x, y, steps, fixed = grid.x, grid.y, grid.steps, grid.fixed
    xs, ys = axis_values(x, steps), axis_values(y, steps)
    grid_x, grid_y = np.meshgrid(xs, ys)  # (steps, steps), indexed [y][x]
    raw = np.empty((steps * steps, len(FEATURES)))
    for k, feature in enumerate(FEATURES):
        if feature == x:
            raw[:, k] = grid_x.ravel()
        elif feature == y:
            raw[:, k] = grid_y.ravel()
        else:
            raw[:, k] = fixed[feature]
    # in chunks: one pass would hold two (steps^2, H) arrays, 164 MB at 100 steps, H = 1024
    o_s = predict_proba_chunked(found.model, raw)
    return json_response(
        {
            "model_version": found.version,
            "x": {"feature": x, "values": xs},
            "y": {"feature": y, "values": ys},
            "fixed": fixed,
            "classes": list(CLASSES),
            "class_index": o_s.argmax(axis=1).reshape(steps, steps),
            "confidence": o_s.max(axis=1).round(4).reshape(steps, steps),
        }
    )
