"""The inference request, declared once: msgspec structs that decode it and document it.

The structs are the request's structure (field names and types, unknown fields refused);
service/v2/decode.py decodes a body into them and checks the values the model needs (one
input named ``measurements``, FP64 or FP32, shape [n, 4], known outputs), naming the problem.
The OpenAPI document's ``InferenceRequest`` is generated from the same structs, with the
values this server takes added to each field (``extra_json_schema``), so the published
schema is exactly as tight as what the server accepts.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from model.data import MAX_MEASUREMENT_CM
from model.network import N_FEATURES
from service.v2.protocol import INPUT, INPUT_DATATYPES, MAX_ELEMENTS, OUTPUTS, UNSUPPORTED

_MEASUREMENT = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MEASUREMENT_CM}
_EXTENSIONS = {"not": {"anyOf": [{"required": [name]} for name in UNSUPPORTED]}}
# Parameters are kept as their bytes, read only when small (decode.read_parameters).
PARAMETERS_BYTES = 4096
"""The longest ``parameters`` object read (the protocol's parameters are a few scalars)."""
_SMALL = f"at most {PARAMETERS_BYTES} bytes"
Parameters = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        extra_json_schema={
            "anyOf": [{"type": "object", **_EXTENSIONS}, {"type": "null"}],
            "description": _SMALL,
        }
    ),
]
# An input's parameters. The JSON form, which a body schema describes, has no
# binary_data_size: that belongs to the binary form (see request_schemas).
_JSON_FORM = {
    "not": {"anyOf": [{"required": [name]} for name in ("binary_data_size", *UNSUPPORTED)]}
}
InputParameters = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        extra_json_schema={
            "anyOf": [{"type": "object", **_JSON_FORM}, {"type": "null"}],
            "description": f"{_SMALL}; binary_data_size (the byte size of the tensor's data "
            "after the JSON) only in the binary tensor data extension's form",
        }
    ),
]
Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


def documented(**schema: Any) -> msgspec.Meta:
    return msgspec.Meta(extra_json_schema=schema)


class InferenceInput(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, documented(const=INPUT)]
    # Integers; 2.0 is one too (JSON Schema counts it as one): decode.check_shape decides.
    shape: tuple[
        Annotated[
            int | float,
            documented(type="integer", minimum=1, maximum=MAX_ELEMENTS // N_FEATURES),
        ],
        Annotated[int | float, documented(const=N_FEATURES)],
    ]
    datatype: Annotated[str, documented(enum=list(INPUT_DATATYPES))]
    # Left as its bytes: decode.tensor_data reads its numbers straight into float64. Absent
    # when the tensor is sent in binary after the JSON (parameters.binary_data_size).
    data: (
        Annotated[
            msgspec.Raw,
            documented(
                type="array",
                minItems=1,
                items={
                    "anyOf": [
                        _MEASUREMENT,
                        {
                            "type": "array",
                            "minItems": N_FEATURES,
                            "maxItems": N_FEATURES,
                            "items": _MEASUREMENT,
                        },
                    ]
                },
            ),
        ]
        | Unset
    ) = UNSET
    parameters: InputParameters | Unset = UNSET


class InferenceOutput(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, documented(enum=list(OUTPUTS))]
    parameters: Parameters | Unset = UNSET


class InferenceRequest(msgspec.Struct, forbid_unknown_fields=True):
    inputs: Annotated[list[InferenceInput], msgspec.Meta(min_length=1), documented(maxItems=1)]
    id: str | Unset | None = UNSET
    parameters: (
        Annotated[
            msgspec.Raw,
            documented(anyOf=[{"type": "object"}, {"type": "null"}], description=_SMALL),
        ]
        | Unset
    ) = UNSET
    outputs: list[InferenceOutput] | Unset | None = UNSET


def request_schemas() -> dict[str, Any]:
    """The OpenAPI components of the request: ``InferenceRequest`` and the structs it holds."""
    _, components = msgspec.json.schema_components(
        [InferenceRequest], ref_template="#/components/schemas/{name}"
    )
    # The JSON form: 'data' is required. The binary tensor data extension's form (the JSON,
    # then the tensor's bytes, Inference-Header-Content-Length giving the JSON's length)
    # leaves it out for parameters.binary_data_size; a body schema cannot describe that form.
    tensor = components["InferenceInput"]
    tensor["required"] = sorted({*tensor.get("required", ()), "data"})
    tensor["description"] = (
        "One input tensor. With the binary tensor data extension, 'data' is left out and "
        "parameters.binary_data_size gives the size of the tensor's bytes after the JSON."
    )
    return components
