"""One row's ModelInfer answer written as protobuf bytes: for speed only.

A one-row answer is a few fields whose bytes hardly change: the model's name, the version,
each output's name, datatype and shape, the class index's and the label's bytes by class.
They are written once here, and an answer is joined from them and its three probabilities.
It is the bytes protobuf writes for the message :func:`service.rpc.server.answer_message`
builds (fields in number order, packed repeated numbers); tests/test_grpc.py holds the
two equal for every choice and order of outputs, raw or typed, with and without an id.

The wire format (protobuf's encoding guide): a field is its tag (number << 3 | wire type)
and, for the length-delimited type 2 used here, its byte length as a varint, then its bytes.
"""

from __future__ import annotations

import functools

from model.data import CLASSES
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
