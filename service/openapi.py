"""The OpenAPI document: FastAPI's routes and the hot routes' table, with their bodies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service import schemas, v2
from service.routing import HotRoutes


def custom_openapi(app: FastAPI, hot: HotRoutes) -> dict[str, Any]:
    """FastAPI's schema of its routes and of the hot routes' table, plus the request bodies
    that routes decode themselves."""
    if app.openapi_schema:
        return app.openapi_schema
    routes = [*hot.documented(), *app.routes]
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    bodies = (
        schemas.PredictRequest,
        schemas.GradientsRequest,
        schemas.TrainRequest,
        schemas.RoutingRequest,
        schemas.FeedbackRequest,
        schemas.Problem,
    )
    for body in bodies:
        spec = body.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(spec.pop("$defs", {}))
        components[body.__name__] = spec
    for item in schema["paths"].values():
        for operation in item.values():
            responses = operation.get("responses", {})
            default = responses.get("422", {}).get("content", {}).get("application/json")
            if default and default["schema"].get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]  # FastAPI's default; this app answers problem documents
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components.update(v2.request_schemas())
    app.openapi_schema = schema
    return schema
