"""Problem documents (RFC 9457) and the error that asks for one; nothing of the service.

Raise :class:`ProblemError` anywhere to answer with a problem document; :mod:`service.problems`
maps every other exception to one. Answers never show the data directory's absolute path
(:func:`public`); the log keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
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
