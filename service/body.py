"""Request bodies: media type, one-pass validation, duplicate keys, and /predict's fast path.

Every body is validated against its pydantic schema straight from the bytes. /predict, the
hot path, first tries a cheaper route for the common well-formed body (orjson, then array
checks); anything it does not fully vouch for goes through the schema, which names the problem.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, TypeVar

import numpy as np
import orjson
from fastapi import Request
from pydantic import BaseModel

from model.data import FEATURES, MAX_MEASUREMENT_CM
from model.network import FloatArray
from model.persistence import VERSION_PATTERN
from service.problems import ProblemError

Body = TypeVar("Body", bound=BaseModel)
_VERSION = re.compile(VERSION_PATTERN)
_FEATURE_KEYS = tuple(f'"{f}"'.encode() for f in FEATURES)


def check_media_type(request: Request) -> None:
    """415 unless the body is sent as uncompressed JSON."""
    media, encoding = "", "identity"
    for name, value in request.scope["headers"]:  # raw, lower-case names: no Headers object
        if name == b"content-type":
            media = value.decode("latin-1").split(";", 1)[0].strip().lower()
        elif name == b"content-encoding":
            encoding = value.decode("latin-1").strip().lower()
    if encoding != "identity":
        raise ProblemError(415, f"Content-Encoding {encoding!r} is not supported; send plain JSON")
    if media != "application/json" and not media.endswith("+json"):
        raise ProblemError(
            415,
            "send the body as JSON with 'Content-Type: application/json' "
            f"(got {media or 'no Content-Type'})",
        )


class _DuplicateKeyError(Exception):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKeyError(key)
        seen.add(key)


def duplicate_key(body: bytes) -> str | None:
    """The first key that appears twice in one JSON object of ``body``, or None.

    JSON parsers disagree on duplicates (first wins, last wins, error), so a body that has
    them means different things to different readers; we refuse it. Exact, with the standard
    library's parser; a body that is not JSON has no duplicates here (the schema says why).
    """
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKeyError as duplicate:
        return str(duplicate)
    except (ValueError, RecursionError):
        return None
    return None


def refuse_duplicate_keys(body: bytes) -> None:
    if (key := duplicate_key(body)) is not None:
        raise ProblemError(400, f"duplicate key {key[:80]!r} in a JSON object of the body")


def parse_json(
    request: Request, body: bytes, schema: type[Body], *, empty_ok: bool = False
) -> Body:
    """Validate the raw body against ``schema`` in one pass (pydantic-core parses the bytes)."""
    if not body and empty_ok:
        return schema()
    check_media_type(request)
    try:
        parsed = schema.model_validate_json(body)
    except ValueError:
        refuse_duplicate_keys(body)  # the ambiguity first: it may be what made the body invalid
        raise
    refuse_duplicate_keys(body)
    return parsed


def fast_instances(body: bytes) -> tuple[FloatArray, str | None] | None:
    """Measurements (n, 4) and model_version of a well-formed /predict body, or None.

    None means "not vouched for": the caller validates with the schema, which either names
    the problem or accepts an unusual body (escaped keys, say). Every rule of the schema is
    checked here too: exactly the four keys per row, numbers that are not booleans, finite and
    in (0, 100], a well-formed version; and no key twice, by counting the keys in the bytes.
    """
    if b"\\" in body:
        return None  # escapes could spell a key twice past the byte counts below
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or "instances" not in document:
        return None
    version = document.get("model_version")
    if len(document) != 1 + ("model_version" in document):
        return None
    if version is not None and (type(version) is not str or not _VERSION.fullmatch(version)):
        return None
    instances = document["instances"]
    if type(instances) is not list or not instances:
        return None
    try:
        rows = [
            (r["sepal_length"], r["sepal_width"], r["petal_length"], r["petal_width"])
            for r in instances
            if len(r) == len(FEATURES)
        ]
    except (TypeError, KeyError):
        return None
    if len(rows) != len(instances):
        return None
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
        return None  # strings, booleans, nulls, nested values
    raw = np.array(rows, dtype=np.float64)
    if not ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
        return None
    n = len(rows)
    if (
        any(body.count(key) != n for key in _FEATURE_KEYS)
        or body.count(b'"instances"') != 1
        or body.count(b'"model_version"') != ("model_version" in document)
    ):
        return None  # a key written twice (or escaped): let the exact path decide
    return raw, version
