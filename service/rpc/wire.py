"""One row's ModelInfer call read and answered as protobuf bytes: for speed only.

**The answer.** A one-row answer is a few fields whose bytes hardly change: the model's
name, the version, each output's name, datatype and shape, the class index's and the
label's bytes by class. They are written once here, and an answer is joined from them and
its three probabilities. It is the bytes protobuf writes for the message
:func:`service.rpc.server.answer_message` builds (fields in number order, packed repeated
numbers); tests/test_grpc.py holds the two equal for every choice and order of outputs, raw
or typed, with and without an id.

**The request.** A client sends the same message again and again but for its
measurements: one FP64 row in ``raw_input_contents`` is the message's last field, 32 bytes
after its tag and length (protobuf writes fields in number order, and this one is the
highest). Once the plain path has accepted such a message, what it asks (version, id,
outputs) is remembered under the bytes before that field, which are checked to be a whole
message on their own without raw contents; a message that is those bytes and 32 others asks
the same, for the row the 32 bytes hold. Such a row is read here with no protobuf and no
checks but the values' range (a value out of it, or a message never seen, takes the plain
path, which names the problem). tests/test_grpc.py holds both paths to the same answers.

The wire format (protobuf's encoding guide): a field is its tag (number << 3 | wire type)
and, for the length-delimited type 2 used here, its byte length as a varint, then its bytes.
"""

from __future__ import annotations

import functools
import struct
from typing import NamedTuple

from google.protobuf.message import DecodeError

from model.data import CLASSES, MAX_MEASUREMENT_CM
from service.body import Rows
from service.rpc import inference_pb2 as pb
from service.v2.protocol import MODEL_NAME, OUTPUTS
from service.v2.routes import row_binary_tensor


def varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint: 7 bits a byte, low first."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): tag, length, bytes."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


# ModelInferResponse: model_name 1, model_version 2, id 3, outputs 5, raw_output_contents 6.
# Its InferOutputTensor: name 1, datatype 2, shape 3 (packed), contents 5. InferTensorContents:
# int64_contents 3 (packed), fp64_contents 7 (packed), bytes_contents 8.
_MODEL = field(1, MODEL_NAME.encode())
_PROBABILITIES = 8 * len(CLASSES)  # their bytes: FP64, little-endian


def _described(name: str) -> bytes:
    """An output tensor's name, datatype and shape for one row."""
    datatype, shape = OUTPUTS[name]
    dims = b"".join(varint(dim) for dim in [1, *shape[1:]])
    return field(1, name.encode()) + field(2, datatype.encode()) + field(3, dims)


# Raw: each output without contents, and its raw_output_contents entry by class index (the
# probabilities' entry is this prefix and their 24 bytes).
_RAW_OUTPUT = {name: field(5, _described(name)) for name in OUTPUTS}
_RAW_PROBABILITIES = field(6, bytes(_PROBABILITIES))[:-_PROBABILITIES]
_RAW_BY_CLASS = {
    name: [field(6, row_binary_tensor(name, [], k)) for k in range(len(CLASSES))]
    for name in ("class_index", "label")
}
# Typed: each output with its contents by class index, and the probabilities' up to their
# 24 bytes.
_TYPED_PROBABILITIES = field(
    5, _described("probabilities") + field(5, field(7, bytes(_PROBABILITIES)))
)[:-_PROBABILITIES]
_TYPED_BY_CLASS = {
    "class_index": [
        field(5, _described("class_index") + field(5, field(3, varint(k))))
        for k in range(len(CLASSES))
    ],
    "label": [
        field(5, _described("label") + field(5, field(8, label.encode()))) for label in CLASSES
    ],
}


@functools.lru_cache(maxsize=64)
def _version(version: str) -> bytes:
    return _MODEL + field(2, version.encode())


def one_row_answer(
    version: str,
    request_id: str,
    names: list[str],
    raw: bool,
    *,
    probabilities: list[float],
    k: int,
) -> bytes:
    """The serialised ModelInferResponse of one row: outputs ``names`` in order, raw or
    typed, from its probabilities and class index k."""
    parts = [_version(version)]
    if request_id:
        parts.append(field(3, request_id.encode()))
    if raw:
        for name in names:
            parts.append(_RAW_OUTPUT[name])
        for name in names:
            if name == "probabilities":
                parts.append(_RAW_PROBABILITIES + row_binary_tensor(name, probabilities, k))
            else:
                parts.append(_RAW_BY_CLASS[name][k])
    else:
        for name in names:
            if name == "probabilities":
                parts.append(_TYPED_PROBABILITIES + row_binary_tensor(name, probabilities, k))
            else:
                parts.append(_TYPED_BY_CLASS[name][k])
    return b"".join(parts)


# -- the request ----------------------------------------------------------------------------

KNOWN_REQUESTS = 256  # messages remembered; past this many, they are forgotten and relearned
KNOWN_BYTES = 1024  # a longer message is never remembered
_ROW = struct.Struct("<4d")  # one row of FP64 measurements, little-endian
_ROW_FIELD = field(7, bytes(_ROW.size))[: -_ROW.size]  # raw_input_contents' tag and length
_SUFFIX = len(_ROW_FIELD) + _ROW.size


class Asked(NamedTuple):
    """What a remembered message asks: the version pinned ("" for none), its id, its outputs."""

    version: str
    id: str
    outputs: list[str]


_known: dict[bytes, Asked] = {}


def remember(message: bytes, asked: Asked) -> None:
    """Remember what ``message`` asks, after the plain path answered it as one FP64 row in
    raw_input_contents: when that row is its last field, and the bytes before it a message
    with no raw contents (so that any 32 bytes after them are that row, and nothing else)."""
    if len(message) > KNOWN_BYTES or message[-_SUFFIX : -_ROW.size] != _ROW_FIELD:
        return
    head = message[:-_SUFFIX]
    if head in _known:
        return
    try:
        alone = pb.ModelInferRequest.FromString(head)
    except DecodeError:  # the 34 bytes were not a field of their own
        return
    if alone.raw_input_contents:
        return
    if len(_known) >= KNOWN_REQUESTS:
        _known.clear()
    _known[head] = asked


def known_row(message: bytes) -> tuple[Asked, Rows] | None:
    """What a remembered message asks and its one row (measurements in cm), or None: not
    remembered, or a value outside (0, MAX_MEASUREMENT_CM] (the plain path says which)."""
    if message[-_SUFFIX : -_ROW.size] != _ROW_FIELD:
        return None
    asked = _known.get(message[:-_SUFFIX])
    if asked is None:
        return None
    row = list(_ROW.unpack_from(message, len(message) - _ROW.size))
    if not all(0 < value <= MAX_MEASUREMENT_CM for value in row):
        return None
    return asked, [row]
