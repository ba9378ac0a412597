"""Request bodies: media type, bounded parsing, duplicate keys; helpers the decoders share.

A body is refused as cheaply as it can be. Before a decoder builds anything from a body
that could hold much (service/native.py, service/v2/decode.py), its bytes are counted
(:func:`check_budget`: a body with more JSON objects, arrays or values than its row limit
allows is refused before anything is built). A body read by a pydantic schema (the bodies
the structs do not read, /gradients, /train) is then parsed once by orjson, checked for
objects with too many keys and for duplicate keys, and only then validated; its lists stop
at their first bad item (``fail_fast``). So the work and the errors a bad body can cause are
bounded by the row limits, not by its size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple, TypeVar

import msgspec
import numpy as np
import orjson
import simdjson
from fastapi import Request
from pydantic import BaseModel

from model.data import MAX_MEASUREMENT_CM
from model.network import FloatArray
from service.errors import ProblemError

Body = TypeVar("Body", bound=BaseModel)
# What a body may hold: a row is one object or array of at most 8 values (a sample has 5),
# and the wrapper, optional fields and tensor metadata need a few more. The budget allows
# twice the rows, so a body a little over its row limit still gets the exact count from
# check_lengths; a body far over it is refused by counting alone.
CONTAINERS_PER_ROW = 2
SPARE_CONTAINERS = 64
VALUES_PER_ROW = 16
SPARE_VALUES = 1024
MAX_OBJECT_KEYS = 32  # the widest schema object has 10 fields


def check_media_type(request: Request) -> None:
    """415 unless the body is sent as uncompressed JSON."""
    media, encoding = "", "identity"
    for name, value in request.scope["headers"]:  # raw, lower-case names: no Headers object
        if name == b"content-type":
            media = (
                "application/json"
                if value == b"application/json"  # as clients send it: no parsing
                else value.decode("latin-1").split(";", 1)[0].strip().lower()
            )
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


def check_budget(body: bytes, rows: int, setting: str) -> None:
    """Refuse, before parsing, a body with more JSON than ``rows`` rows can need.

    The counts of ``{``, ``[`` and ``,`` bound what a parser would build (strings in these
    bodies are keys, names and ids that never need them in such numbers), so a body of a
    million empty objects is refused in a few milliseconds instead of being parsed.
    """
    containers = occurrences(body, b"{") + occurrences(body, b"[")
    most_values = VALUES_PER_ROW * rows + SPARE_VALUES
    # A body shorter than the bound cannot hold more commas: no need to count them.
    values = occurrences(body, b",") if len(body) > most_values else 0
    if containers > CONTAINERS_PER_ROW * rows + SPARE_CONTAINERS or values > most_values:
        values = occurrences(body, b",")
        raise ProblemError(
            422,
            f"the body holds more JSON than {rows} rows need ({containers} objects and "
            f"arrays, {values + 1} values or more): at most {rows} rows are accepted ({setting})",
        )


class Document(NamedTuple):
    """A body parsed for its checks: ``tree`` for the structure, ``exact`` when it is orjson's.

    orjson refuses a few things pydantic's own parser reads and names more precisely (NaN and
    Infinity literals, integers past 64 bits, some escapes); such a body is parsed by the
    standard library for the structural checks and validated from its bytes.
    """

    body: bytes
    tree: Any
    exact: bool

    def validate(self, schema: type[Body]) -> Body:
        if self.exact and type(self.tree) is dict:
            return schema.model_validate(self.tree)
        return schema.model_validate_json(self.body)


def load(body: bytes) -> Document:
    try:
        return Document(body, orjson.loads(body), exact=True)
    except orjson.JSONDecodeError:
        pass
    try:
        tree = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        tree = None  # not JSON: pydantic's parser names where, without building anything
    return Document(body, tree, exact=False)


def read_json(body: bytes, rows: int, setting: str) -> Document:
    """The body within its budget, no object too wide, no key twice."""
    check_budget(body, rows, setting)
    document = load(body)
    check_object_sizes(document.tree)
    refuse_duplicate_keys(body)
    return document


def check_object_sizes(document: Any) -> None:
    """Refuse an object with more than MAX_OBJECT_KEYS keys (each unknown key would be an error)."""
    stack = [document]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            if len(node) > MAX_OBJECT_KEYS:
                shown = ", ".join(repr(key[:40]) for key in list(node)[:3])
                raise ProblemError(
                    422,
                    f"an object of the body has {len(node)} keys ({shown}, ...): "
                    f"no object here takes more than {MAX_OBJECT_KEYS}",
                )
            stack.extend(v for v in node.values() if type(v) in (dict, list))
        elif type(node) is list:
            stack.extend(v for v in node if type(v) in (dict, list))


def check_lengths(document: Any, paths: tuple[str, ...], limit: int, setting: str) -> None:
    """422 when an array at one of ``paths`` ("instances", "dataset.samples") is over ``limit``."""
    for path in paths:
        node = document
        for key in path.split("."):
            node = node.get(key) if type(node) is dict else None
        if type(node) is list and len(node) > limit:
            raise ProblemError(
                422, f"{path}: {len(node)} rows, more than the limit of {limit} ({setting})"
            )


def parse_json(
    request: Request,
    body: bytes,
    schema: type[Body],
    *,
    rows: int,
    paths: tuple[str, ...],
    setting: str,
    empty_ok: bool = False,
) -> Body:
    """Media type, bounded parse, row limits at ``paths``, then the schema."""
    if not body and empty_ok:
        return schema()
    check_media_type(request)
    document = read_json(body, rows, setting)
    check_lengths(document.tree, paths, rows, setting)
    return document.validate(schema)


def json_numbers(array: bytes) -> FloatArray | None:
    """The numbers of the JSON ``array`` in order, as float64; None unless it is valid JSON
    holding numbers only. Arrays in it are flattened: the caller knows how they nest.

    simdjson reads the numbers straight into doubles, correctly rounded as ``float()`` reads
    them, and validates the text as strictly as msgspec; a decoder of Python objects would
    build a float per number for NumPy to read back, twice the cost on 10,000 rows.
    """
    # A parser per call: one parser is not safe across threads, and a kept one would hold
    # on to the memory of the largest body it read. (Its buffers come from the heap the
    # server keeps, service/tuning.py, so a new one costs no more than a kept one.)
    try:
        parsed = simdjson.Parser().parse(array)
        if type(parsed) is not simdjson.Array:  # a number, a string, null, an object
            return None
        buffer = parsed.as_buffer(of_type="d")
    except (ValueError, TypeError, RuntimeError):  # not JSON; a non-number; past 64 bits
        return None
    return np.frombuffer(buffer, dtype=np.float64)


Measurement = Annotated[float, msgspec.Meta(gt=0, le=MAX_MEASUREMENT_CM)]
"""A measurement as the decoders' structs take it: a finite number of cm in (0, 100]."""
Rows = FloatArray | list[Sequence[float]]
"""Measurements (n, 4): an array, or for a few rows the rows as they came (each 4 Python
numbers)."""


def quotes_agree(body: bytes, strings: int) -> bool:
    """Whether ``body``, whose decoded value holds ``strings`` keys and string values in all,
    writes each key once: a decoder keeps one of two keys written alike, but the bytes keep
    both pairs of quotes. Exact for a body with no backslash (no escaped quote in a string);
    for one with a backslash, ask :func:`duplicate_key`."""
    return occurrences(body, b'"') == 2 * strings and b"\\" not in body


COUNTED_BY_NUMPY = 4096
"""Past this many bytes, :func:`occurrences` counts with NumPy: ``bytes.count`` of one byte
goes a byte at a time, six times slower on a 10,000-row body."""


def occurrences(text: bytes, byte: bytes) -> int:
    """How many times ``byte`` (one) occurs in ``text``: ``text.count(byte)``, faster."""
    if len(text) <= COUNTED_BY_NUMPY:
        return text.count(byte)
    return int(np.count_nonzero(np.frombuffer(text, dtype=np.uint8) == byte[0]))


def strings_in(value: Any) -> int:
    """The keys and string values in a decoded JSON value, at every depth."""
    if type(value) is dict:
        return len(value) + sum(map(strings_in, value.values()))
    if type(value) is list:
        return sum(map(strings_in, value))
    return type(value) is str
