"""The protocol's errors: every one is ``{"error": "..."}``, never a problem document."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from service import problems
from service.errors import ProblemError, public

log = logging.getLogger("iris.v2")


class ProtocolError(Exception):
    """Raise in a /v2 route to answer ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def bad_request(message: str) -> ProtocolError:
    return ProtocolError(400, message)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": public(message)}  # no data directory paths to clients
    return Response(orjson.dumps(body), status, headers, "application/json")


def domain_status(error: Exception) -> int | None:
    """The status the native API gives a model or store error (one table for both APIs)."""
    return next((code for kind, code in problems.DOMAIN_STATUS if isinstance(error, kind)), None)


def protocol_status(error: Exception) -> tuple[int, str, dict[str, str] | None] | None:
    """The protocol's status, message and headers for an expected error (over HTTP and
    gRPC alike); None for an unexpected one."""
    if isinstance(error, ProtocolError):
        return error.status, error.message, error.headers
    if isinstance(error, ProblemError):  # the core's and shared checks speak native
        status = 400 if error.status == 422 else error.status  # the protocol has no 422
        return status, error.detail, error.headers
    domain = domain_status(error)
    return None if domain is None else (domain, str(error), None)


INTERNAL_ERROR = "internal error; the server log has the details"


def protocol_error(request: Request, error: Exception) -> Response:
    """The protocol's ``{"error": ...}`` answer for any exception a /v2 handler raised."""
    found = protocol_status(error)
    if found is not None:
        return error_response(*found)
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, INTERNAL_ERROR)


class ErrorResponse(BaseModel):
    """The protocol's error object."""

    error: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error objects a route may answer with."""
    described = {
        400: "a bad request; the error names the problem",
        404: "unknown model or version",
        409: "the version is stored but corrupt",
        413: "body over IRIS_MAX_BODY_BYTES",
        415: "a Content-Encoding other than gzip or deflate",
        503: "no model is loaded yet",
    }
    return {code: {"description": described[code], "model": ErrorResponse} for code in codes}
