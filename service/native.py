"""The native API's request bodies: /predict and /gradients, from bytes to typed rows.

A decoder per body: bytes to typed rows (or the typed request) or a named 4xx. The common
/predict body is read by msgspec into the :class:`PredictBody` struct (unknown fields
forbidden, every measurement a finite number in (0, 100], the version well formed), the
typed reading of the schema ``service.schemas.PredictRequest`` documents. msgspec keeps the
last of two keys written alike, so a key written twice is ruled out by counting (every key
and string value of the body is two quotes: service.body.quotes_agree). Whatever the struct
does not read (an error, an escaped key, a version given as null) is read again by the
schema, which either names the problem, with its location, or accepts the body: the struct
is the fast reading, the schema the one that explains, and tests/test_decoders.py holds the
first to accept nothing the second refuses, with the same numbers.
"""

from __future__ import annotations

import itertools
from typing import Annotated, NamedTuple

import msgspec
import numpy as np

from model.data import FEATURES
from model.network import N_FEATURES, FloatArray
from model.persistence import VERSION_PATTERN
from service import schemas
from service.body import Measurement, Rows, quotes_agree, read_json

# msgspec searches with Python's re, whose $ also matches before a final newline.
_WHOLE_VERSION = VERSION_PATTERN.removesuffix("$") + r"\Z"


class Row(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    sepal_length: Measurement
    sepal_width: Measurement
    petal_length: Measurement
    petal_width: Measurement


assert Row.__struct_fields__ == FEATURES  # the columns, in the model's order


class PredictBody(msgspec.Struct, forbid_unknown_fields=True):
    instances: Annotated[list[Row], msgspec.Meta(min_length=1)]
    model_version: Annotated[str, msgspec.Meta(pattern=_WHOLE_VERSION)] | msgspec.UnsetType = (
        msgspec.UNSET
    )


_predict = msgspec.json.Decoder(PredictBody)
_columns = msgspec.structs.astuple


class PredictInput(NamedTuple):
    """Measurements (n, 4) in centimetres, and the version asked for (None: the active one)."""

    rows: Rows
    version: str | None


def predict_input(body: bytes, limit: int) -> PredictInput:
    """The rows and version of a /predict body, or the schema's named 4xx.

    ``limit`` (IRIS_MAX_INSTANCES) bounds what reading may cost: a body longer than
    ROW_BYTES a row of it is left to the schema's reading, which counts it before building
    anything; the inference core refuses too many rows.
    """
    if len(body) > ROW_BYTES * limit:
        return explained(body, limit)
    return struct_reading(body) or explained(body, limit)


ROW_BYTES = 256
"""Bytes a row may take in a body the struct reads (one written compactly takes under 100)."""


def struct_reading(body: bytes) -> PredictInput | None:
    """The struct's reading of a /predict body, or None: not read, or a key maybe twice."""
    try:
        read = _predict.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    n = len(read.instances)
    given = read.model_version
    if not quotes_agree(body, 1 + 4 * n + 2 * (given is not msgspec.UNSET)):  # keys, version
        return None
    version = given if isinstance(given, str) else None
    if n == 1:  # the common request: the row as Python numbers, no array
        return PredictInput([_columns(read.instances[0])], version)
    flat = itertools.chain.from_iterable(map(_columns, read.instances))
    raw = np.fromiter(flat, dtype=np.float64, count=n * N_FEATURES)
    return PredictInput(raw.reshape(n, N_FEATURES), version)


def explained(body: bytes, limit: int) -> PredictInput:
    """The schema's reading of a body the struct did not read: its rows, or its 4xx."""
    document = read_json(body, limit, "IRIS_MAX_INSTANCES")
    parsed = document.validate(schemas.PredictRequest)
    return PredictInput(instance_rows(parsed.instances), parsed.model_version)


def instance_rows(instances: list[schemas.Instance]) -> FloatArray:
    """The measurements (n, 4) of validated instances, in centimetres."""
    return np.array(
        [(i.sepal_length, i.sepal_width, i.petal_length, i.petal_width) for i in instances],
        dtype=np.float64,
    )


def gradients_input(body: bytes, limit: int) -> schemas.GradientsRequest:
    """The /gradients request of a body (not a hot path: the schema reads it), or its 4xx."""
    return read_json(body, limit, "IRIS_MAX_INSTANCES").validate(schemas.GradientsRequest)
