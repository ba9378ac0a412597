"""JSON answers, and the OpenAPI entries of the answers a route may give."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from service.errors import PROBLEM_JSON

NUMPY_JSON = orjson.OPT_SERIALIZE_NUMPY


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(content, option=NUMPY_JSON), status, headers, "application/json")


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem documents a route may answer with."""
    described = {
        400: "the body is not JSON",
        401: "missing or wrong bearer token",
        404: "unknown model version or job",
        409: "conflicting state (a job is running, the version is corrupt or current, "
        "the job ended)",
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
