"""Request bodies: media type, bounded parsing, duplicate keys, and /predict's fast path.

A body is refused as cheaply as it can be: first by counting bytes (a body with more JSON
objects, arrays or values than its row limit allows is refused before anything is built),
then parsed once by orjson, then checked for objects with too many keys and for duplicate
keys, then for over-long row arrays, and only then validated against its pydantic schema,
whose lists stop at their first bad item (``fail_fast``). So the work and the errors a bad
body can cause are bounded by the row limits, not by its size. /predict, the hot path, first
tries a cheaper route for the common well-formed body: many rows read from the bytes
(:func:`fast_rows`, a few linear passes and at most the row limit's rows, before the
counting), a few from orjson's document (:func:`fast_document`); anything they do not fully
vouch for goes through the schema, which names the problem.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Sequence
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
import orjson
import simdjson
from fastapi import Request
from pydantic import BaseModel

from model.data import FEATURES, MAX_MEASUREMENT_CM
from model.network import FloatArray
from model.persistence import VERSION_PATTERN
from service.errors import ProblemError

Body = TypeVar("Body", bound=BaseModel)
_VERSION = re.compile(VERSION_PATTERN)
_ROW = operator.itemgetter(*FEATURES)
# What a body may hold: a row is one object or array of at most 8 values (a sample has 5),
# and the wrapper, optional fields and tensor metadata need a few more. The budget allows
# twice the rows, so a body a little over its row limit still gets the exact count from
# check_lengths; a body far over it is refused by counting alone.
CONTAINERS_PER_ROW = 2
SPARE_CONTAINERS = 64
VALUES_PER_ROW = 16
SPARE_VALUES = 1024
MAX_OBJECT_KEYS = 32  # the widest schema object has 10 fields
SMALL_BATCH = 8  # rows checked with Python's comparisons rather than NumPy's


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


_KEY_END = re.compile(rb'"\s*:')


def keys_written(text: bytes, keys: int) -> bool:
    """Whether the JSON ``text``, whose parsed objects hold ``keys`` keys in all, writes each
    key once: a parser keeps one of two keys written alike, so a key written twice shows as
    one more key end (a quote, white space, a colon) than the document holds. Exact for text
    with no backslash (no escaped quote) and no string value holding ``":``; without a
    backslash an escaped spelling of a key is ruled out too."""
    return b"\\" not in text and len(_KEY_END.findall(text)) == keys


def check_budget(body: bytes, rows: int, setting: str) -> None:
    """Refuse, before parsing, a body with more JSON than ``rows`` rows can need.

    The counts of ``{``, ``[`` and ``,`` bound what a parser would build (strings in these
    bodies are keys, names and ids that never need them in such numbers), so a body of a
    million empty objects is refused in a few milliseconds instead of being parsed.
    """
    containers = body.count(b"{") + body.count(b"[")
    most_values = VALUES_PER_ROW * rows + SPARE_VALUES
    # A body shorter than the bound cannot hold more commas: no need to count them.
    values = body.count(b",") if len(body) > most_values else 0
    if containers > CONTAINERS_PER_ROW * rows + SPARE_CONTAINERS or values > most_values:
        values = body.count(b",")
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


def json_numbers(text: bytes) -> FloatArray | None:
    """The numbers of the JSON array ``[text]`` in order, as float64; None unless it is valid
    JSON holding numbers only. Arrays in it are flattened: the caller knows how they nest.

    simdjson reads the numbers straight into doubles, correctly rounded as ``float()`` reads
    them, and validates the text as strictly as orjson; orjson would build a Python float per
    number for NumPy to read back, four times the cost on 10,000 rows.
    """
    # A parser per call: one parser is not safe across threads, and a kept one would hold
    # on to the memory of the largest body it read.
    try:
        parsed = cast(simdjson.Array, simdjson.Parser().parse(b"[" + text + b"]"))
        buffer = parsed.as_buffer(of_type="d")
    except (ValueError, TypeError, RuntimeError):  # not JSON; a non-number; past 64 bits
        return None
    return np.frombuffer(buffer, dtype=np.float64)


Rows = FloatArray | list[Sequence[float]]
"""Measurements (n, 4): an array, or for a few rows the rows as they came (each 4 Python
numbers)."""


_INSTANCES = re.compile(rb'"instances"\s*:\s*\[')
_ROW_COMMA = b'{"%s":,"%s":,"%s":,"%s":},' % tuple(name.encode() for name in FEATURES)
_KEY_SLOTS = np.array([len(name) + 1 for name in FEATURES])  # quote to quote
# A row read as an array of eight numbers: {"sepal_length":5.1, ...} -> [ 11 ,5.1, ...]. Each
# key becomes its l's as a number framed by spaces, so a stray number byte beside a key or a
# brace is a second number where JSON wants a comma, and a value left out an empty element.
_KEYS_AS_NUMBERS = bytes.maketrans(b'{}:"l', b"[], 1")
_KEY_LETTERS = bytes(set(range(ord("a"), ord("z") + 1)) - {ord("l")}) + b"_"
_DIGITS_AND_SPACE = b"0123456789.+- \t\r\n"  # of a number, but e and E
LARGE_BODY = 8192  # bytes; below, orjson reads the rows as cheaply
"""A /predict body over this many bytes is first read by :func:`fast_rows`."""
FAST_ROW_BYTES = 256
"""The fast paths read a body of at most this many bytes per row of the limit (a row of four
numbers takes under 100): a longer one is counted (:func:`check_budget`) before any copy."""


def fast_rows(body: bytes, limit: int) -> tuple[FloatArray, str | None] | None:
    """:func:`fast_document` for many rows, read from the bytes without a Python object
    per row: measurements (n, 4) and model_version, or None (not vouched for).

    The rows' bytes are cut out and the rest of the body read by orjson. The rows are
    vouched for when, numbers and white space taken out, they read exactly n times
    ``{"sepal_length":,"sepal_width":,"petal_length":,"petal_width":}`` and each key
    spans exactly its length: so every row has the four keys in this order, once, spelled
    exactly. Number bytes may still stand anywhere between the template's bytes: each row is
    then rewritten as an array of eight numbers (each key as a number, then its value), which
    simdjson reads straight into float64 and validates as JSON, so a value left out, two in
    one place or a stray byte beside a key or a brace is refused. Rows in another key order,
    numbers with an exponent, and anything unusual go to :func:`fast_document` or the schema.
    More than ``limit`` rows are not read here.
    """
    if len(body) > FAST_ROW_BYTES * limit:
        return None
    found = _INSTANCES.search(body)
    if found is None:
        return None
    start = found.end()
    end = body.find(b"]", start)  # no row holds one
    if end < 0:
        return None
    rows, rest = body[start:end], body[:start] + body[end:]
    try:
        document = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or document.get("instances") != []:
        return None
    version = document.get("model_version")
    if (
        not document.keys() <= {"instances", "model_version"}
        or (version is not None and (type(version) is not str or not _VERSION.fullmatch(version)))
        or not keys_written(rest, len(document))
    ):
        return None
    skeleton = rows.translate(None, _DIGITS_AND_SPACE)
    n = (len(skeleton) + 1) // len(_ROW_COMMA)
    if not 1 <= n <= limit or skeleton + b"," != _ROW_COMMA * n:
        return None
    quotes = np.flatnonzero(np.frombuffer(rows, dtype=np.uint8) == ord('"'))
    if not (quotes[1::2] - quotes[0::2] == np.tile(_KEY_SLOTS, n)).all():
        return None  # a number byte or a space inside a key
    values = json_numbers(rows.translate(_KEYS_AS_NUMBERS, _KEY_LETTERS))
    if values is None or len(values) != 2 * n * len(FEATURES):
        return None
    raw = values.reshape(n, 2 * len(FEATURES))[:, 1::2]  # the keys' numbers dropped
    if not ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
        return None
    return raw, version


def fast_instances(body: bytes) -> tuple[Rows, str | None] | None:
    """:func:`fast_document` on the bytes alone (None for a body orjson cannot read)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return fast_document(document, body)


def only_keys_quoted(body: bytes, n: int, document: dict[str, Any]) -> bool:
    """The quotes of the body are exactly those of n rows' keys, the wrapper's keys and the
    version: so no value is a string and no key is written twice (a parsed document keeps
    one of two), which the parsed rows, each of the four keys, no longer show."""
    strings = n * len(FEATURES) + len(document) + (type(document.get("model_version")) is str)
    return body.count(b'"') == 2 * strings


def fast_document(document: Any, body: bytes) -> tuple[Rows, str | None] | None:
    """Measurements (n, 4) and model_version of a well-formed /predict body, or None.

    None means "not vouched for": the caller validates with the schema, which either names
    the problem or accepts an unusual body (escaped keys, say). Every rule of the schema is
    checked here too: exactly the four keys per row, numbers that are not booleans, finite and
    in (0, 100], a well-formed version; and no key twice, by counting the keys in the bytes.
    """
    if b"\\" in body:
        return None  # escapes could spell a key twice past the byte counts below
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
    if len(instances) == 1:  # the common request: no lists of lists, no generators
        try:
            row = _ROW(instances[0])
        except (TypeError, KeyError):
            return None  # not an object with the four measurements (a fifth key: the quotes)
        for v in row:
            if (type(v) is not float and type(v) is not int) or not 0 < v <= MAX_MEASUREMENT_CM:
                return None  # a string, a boolean, a null, a nested value, out of range
        return ([row], version) if only_keys_quoted(body, 1, document) else None
    try:
        rows = list(map(_ROW, instances))  # each row's four measurements, in order
    except (TypeError, KeyError):
        return None  # a row that is not an object with the four measurements
    n = len(rows)
    if not only_keys_quoted(body, n, document):
        return None  # a fifth key in a row, a key written twice, a string value
    raw: Rows
    if n <= SMALL_BATCH:  # a few numbers: Python's checks cost less than NumPy's calls
        values = list(itertools.chain.from_iterable(rows))
        if not set(map(type, values)) <= {float, int}:
            return None  # booleans, nulls, nested values
        if not all(0 < v <= MAX_MEASUREMENT_CM for v in values):
            return None
        return rows, version
    # Many rows: the bytes vouch for the types. The quotes are the keys', so no value is a
    # string; no "u" (no key or version has one), so no true and no null; a false would read
    # as 0.0, which the range refuses; and a nested value cannot go into the array.
    if b"u" in body:
        return None
    try:
        flat = itertools.chain.from_iterable(rows)
        raw = np.fromiter(flat, dtype=np.float64, count=n * len(FEATURES)).reshape(n, -1)
    except (TypeError, ValueError, OverflowError):
        return None
    if not ((raw > 0) & (raw <= MAX_MEASUREMENT_CM)).all():
        return None
    return raw, version
