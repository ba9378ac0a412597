"""RFC 9457 problem documents, and the one place that maps errors to status codes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
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
    ModelNotFoundError,
    ModelStoreError,
    StoreWriteError,
)
from service.jobs import (
    JobActiveError,
    JobConflictError,
    JobFinishedError,
    JobNotFoundError,
    JobsBusyError,
    JobsUnavailableError,
)
from service.registry import NotReadyError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("iris.errors")
# Absolute spellings of the data directory, longest first: answers say DATA_DIR instead.
_hidden_paths: list[str] = []


def hide_paths(data_dir: Path) -> None:
    """From now on answers name ``data_dir`` DATA_DIR (the log keeps the full paths)."""
    forms = {str(data_dir.absolute()), str(data_dir.resolve()), *_hidden_paths}
    _hidden_paths[:] = sorted((f for f in forms if f != "/"), key=len, reverse=True)


def public(text: str) -> str:
    """``text`` as an anonymous client may see it: the data directory's path replaced."""
    for path in _hidden_paths:
        text = text.replace(path, "DATA_DIR")
    return text


class ProblemError(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem(
    status: int,
    detail: str,
    instance: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": public(detail),
        **({"instance": instance} if instance else {}),
        **extra,
    }
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def location(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(part) for part in loc if part not in ("body",)) or "body"


SHOWN_ERRORS = 5  # named in the detail
LISTED_ERRORS = 20  # in the problem's "errors"


def validation_problem(errors: Sequence[Any], instance: str) -> Response:
    """400 for a body that is not JSON, else 422 naming the first fields that are wrong.

    The lists of a body stop at their first bad item (``fail_fast``), so ``errors`` is short.
    """
    listed = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors[:LISTED_ERRORS]
    ]
    if any(e["type"] in ("json_invalid", "json_type") for e in listed):
        first = next(e for e in listed if e["type"] in ("json_invalid", "json_type"))
        return problem(400, f"the body is not valid JSON: {first['msg']}", instance)
    shown = "; ".join(f"{location(e['loc'])}: {e['msg']}" for e in listed[:SHOWN_ERRORS])
    more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
    return problem(422, f"invalid request: {shown}{more}", instance, errors=listed)


# (exception type, status) in order: the first match wins.
DOMAIN_STATUS: list[tuple[type[Exception], int]] = [
    (InvalidVersionError, 404),
    (ModelNotFoundError, 404),
    (JobNotFoundError, 404),
    (DataError, 422),
    (HyperparameterError, 422),
    (CorruptModelError, 409),
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
