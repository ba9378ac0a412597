"""The one place that maps exceptions to problem documents and their status codes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from model.errors import (
    CorruptModelError,
    DataError,
    HyperparameterError,
    InvalidVersionError,
    ModelInUseError,
    ModelNotFoundError,
    ModelStoreError,
    StoreWriteError,
)
from service.errors import ProblemError, problem, public, validation_problem
from service.job_store import (
    JobActiveError,
    JobConflictError,
    JobFinishedError,
    JobNotFoundError,
    JobsBusyError,
    JobsUnavailableError,
)
from service.registry import NotReadyError

log = logging.getLogger("iris.errors")

# (exception type, status) in order: the first match wins.
DOMAIN_STATUS: list[tuple[type[Exception], int]] = [
    (InvalidVersionError, 404),
    (ModelNotFoundError, 404),
    (JobNotFoundError, 404),
    (DataError, 422),
    (HyperparameterError, 422),
    (CorruptModelError, 409),
    (ModelInUseError, 409),
    (JobConflictError, 409),
    (JobFinishedError, 409),
    (JobActiveError, 409),
    (NotReadyError, 503),
    (StoreWriteError, 507),
    (JobsUnavailableError, 503),
    (ModelStoreError, 503),
]


def problem_for(request: Request, error: Exception) -> Response:
    """The problem document for any exception: the one mapping of errors to statuses."""
    path = request.url.path
    if isinstance(error, ProblemError):
        return problem(error.status, error.detail, path, headers=error.headers, **error.extra)
    if isinstance(error, ValidationError):
        return validation_problem(error.errors(include_url=False), path)
    if isinstance(error, RequestValidationError):
        return validation_problem(list(error.errors()), path)
    if isinstance(error, StarletteHTTPException):
        detail = error.detail if isinstance(error.detail, str) else str(error.detail)
        headers = dict(error.headers or {})
        if error.status_code == 404 and detail == "Not Found":
            detail = f"no endpoint at {path}"
        elif error.status_code == 405:
            detail = f"{request.method} is not allowed on {path}"
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem(error.status_code, detail, path, headers=headers)
    for kind, status in DOMAIN_STATUS:
        if isinstance(error, kind):
            extra: dict[str, Any] = (
                {"job_id": error.job_id} if isinstance(error, JobConflictError) else {}
            )
            retry = {"Retry-After": "1"} if isinstance(error, JobsBusyError) else None
            logged = isinstance(error, NotReadyError)  # the registry logged it already
            if status >= 500 and not logged and public(str(error)) != str(error):
                log.warning("%s %s: %d: %s", request.method, path, status, error)
            return problem(status, str(error), path, headers=retry, **extra)
    log.exception("unexpected error on %s %s", request.method, path, exc_info=error)
    return problem(500, "internal error; the server log has the details", path)


def allowed_methods(request: Request) -> list[str]:
    """Every method some native route serves at this path (Starlette names only the first).

    The routes are the ones given to :func:`install`; /v2 answers its own 405s.
    """
    routes: Sequence[BaseRoute] = getattr(request.app.state, "allow_routes", ())
    return sorted(
        {
            method
            for route in routes
            if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
            for method in route.methods or ()
        }
    )


async def handle(request: Request, error: Exception) -> Response:
    return problem_for(request, error)


def install(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Answer every error with a problem document; 405s name the methods of ``routes``."""
    app.state.allow_routes = list(routes)
    kinds = [ProblemError, RequestValidationError, ValidationError, StarletteHTTPException]
    for kind in [*kinds, *(k for k, _ in DOMAIN_STATUS), Exception]:
        app.add_exception_handler(kind, handle)
