"""Binary requests whose JSON was seen before: for speed only.

A client of the binary tensor data extension sends the same JSON again and again, only the
bytes after it change (tritonclient writes the same header for every batch of one shape).
Once the plain path (:func:`service.v2.decode.read_request`) has accepted a request, what its
JSON asks (the outputs, in binary or not, the id, and how the input is read) is remembered
under that JSON, which is all it depends on. A request with the same JSON then has its rows
read from its binary data with the plain path's own :func:`~service.v2.decode.binary_rows`,
which checks their size and values as for any request, and nothing else is decoded.
tests/test_decoders.py holds the two readings equal.
"""

from __future__ import annotations

from typing import NamedTuple

from service.v2.decode import (
    UNCOUNTED_BODY_BYTES,
    Asked,
    BinaryInput,
    binary_rows,
    read_request,
)
from service.v2.decode import request_input as plain_input

KNOWN_REQUESTS = 256  # JSONs remembered; past this many, they are forgotten and relearned
KNOWN_BYTES = UNCOUNTED_BODY_BYTES  # a longer JSON is never remembered


class Known(NamedTuple):
    """What a remembered JSON asks, under the row limit it was read with."""

    limit: int
    given: BinaryInput
    outputs: list[str]
    binary: list[bool]
    id: str | None


_known: dict[bytes, Known] = {}


def request_input(body: bytes, limit: int, binary: memoryview | None = None) -> Asked:
    """:func:`service.v2.decode.request_input`, with the JSON of a binary request remembered."""
    if binary is None or len(body) > KNOWN_BYTES:
        return plain_input(body, limit, binary)
    known = _known.get(body)
    if known is not None and known.limit == limit:
        datatype, n, size = known.given
        rows = binary_rows(binary, size, datatype, n)
        return Asked(rows, known.outputs, known.binary, known.id)
    asked, read = read_request(body, limit, binary)
    if read is not None:
        if len(_known) >= KNOWN_REQUESTS:
            _known.clear()
        _known[body] = Known(limit, read, asked.outputs, asked.binary, asked.id)
    return asked
