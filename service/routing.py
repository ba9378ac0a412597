"""The hot routes: the body routes the edge answers before FastAPI, as one explicit table.

Each route module declares its :class:`HotRoute` (method, path, handler, error shape, and
what the OpenAPI document says of it); the app factory (service/main.py) builds the
:class:`HotRoutes` table from them. The table is what the edge dispatches on
(service/edge/dispatch.py) and what the OpenAPI document describes
(:meth:`HotRoutes.documented`): hot routes are not FastAPI routes, so there is no second
handler that could answer differently.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import Scope


class Answer(NamedTuple):
    """A hot route's answer that is not JSON alone: its bytes and its content headers
    (content-type and any of its own; content-length is added)."""

    content: bytes
    headers: list[tuple[bytes, bytes]]


# A hot route's handler: the request and its whole body in, its JSON (or an Answer) out.
BodyHandler = Callable[[Request, bytes], "bytes | Answer"]
"""A body route's work: the request and its body to its answer's JSON (or raise)."""
ErrorAnswer = Callable[[Request, Exception], Response]
MATCHED_PATHS = 64  # paths with parameters remembered by the table, the first that match


@dataclass(frozen=True)
class HotRoute:
    """A body route the edge answers itself: its handler, and how its errors look.

    ``openapi`` holds what :class:`fastapi.routing.APIRoute` takes to document it
    (``summary``, ``response_model``, ``responses``, ``openapi_extra``, ``tags``).
    """

    method: str
    path: str
    handler: BodyHandler
    errors: ErrorAnswer
    openapi: Mapping[str, Any] = field(default_factory=dict)


class HotRoutes:
    """The table: a route by method and path, exact paths in one lookup, paths with
    parameters (``{model_version}``) by pattern."""

    def __init__(self, routes: Iterable[HotRoute]) -> None:
        self.routes = list(routes)
        self.by_path: dict[str, dict[str, HotRoute]] = {}
        for route in self.routes:
            self.by_path.setdefault(route.path, {})[route.method] = route
        self.patterns = [(path_pattern(path), path) for path in self.by_path if "{" in path]
        self.matched: dict[str, tuple[str, dict[str, str]]] = {}

    def match(self, scope: Scope) -> dict[str, HotRoute] | None:
        """The routes at the request's path by method, or None; a path's parameters
        go into the scope's ``path_params``, as routing would put them. Paths that matched
        are remembered (a few: clients choose paths), so a busy one is one lookup."""
        path = scope["path"]
        found = self.by_path.get(path)
        if found is not None:
            return found
        known = self.matched.get(path)
        if known is None:
            for pattern, template in self.patterns:
                if (hit := pattern.match(path)) is not None:
                    known = (template, hit.groupdict())
                    if len(self.matched) < MATCHED_PATHS:
                        self.matched[path] = known
                    break
            else:
                return None
        template, params = known
        scope["path_params"] = dict(params)
        return self.by_path[template]

    def documented(self) -> list[APIRoute]:
        """The table as FastAPI routes, for the OpenAPI document only: never mounted, so
        never called."""
        return [
            APIRoute(
                route.path,
                endpoint_for(route.path, _answered_by_the_edge),
                methods=[route.method],
                name=getattr(route.handler, "__name__", None),
                **route.openapi,
            )
            for route in self.routes
        ]


def endpoint_for(
    path: str, call: Callable[[Request], Awaitable[Response]]
) -> Callable[..., Awaitable[Response]]:
    """An endpoint running ``call(request)`` that declares ``path``'s parameters (strings) to
    FastAPI, for its OpenAPI document; ``call`` reads them from ``request.path_params``. One
    handler can so serve several paths (a versioned and an unversioned one)."""

    async def endpoint(request: Request, **_: str) -> Response:
        return await call(request)

    request = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
    )
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str)
        for name in re.findall(r"{(\w+)}", path)
    ]
    endpoint.__signature__ = inspect.Signature([request, *params])  # type: ignore[attr-defined]
    endpoint.__name__ = getattr(call, "__name__", "endpoint")
    return endpoint


async def _answered_by_the_edge(request: Request) -> NoReturn:
    raise RuntimeError(f"{request.url.path} is a hot route: the edge answers it, not FastAPI")


def path_pattern(path: str) -> re.Pattern[str]:
    """A route path with ``{parameters}`` as a regular expression of whole paths, each
    parameter a named group."""
    parts = re.split(r"\{([^}/]+)\}", path)  # literal, name, literal, name, ...
    pattern = "".join(
        f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile(f"^{pattern}$")
