"""The inference request: pydantic models for validation, and its JSON Schema for OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from model.data import MAX_MEASUREMENT_CM
from model.network import N_FEATURES
from service.schemas import Integer
from service.v2.protocol import INPUT, INPUT_DATATYPES, MAX_ELEMENTS, OUTPUTS, UNSUPPORTED


class ClosedModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestInput(ClosedModel):
    name: StrictStr
    shape: list[Integer] = Field(fail_fast=True)
    datatype: StrictStr
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(ClosedModel):
    name: StrictStr
    parameters: dict[str, Any] | None = None


class InferenceRequest(ClosedModel):
    id: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, fail_fast=True)
    outputs: list[RequestOutput] | None = Field(None, fail_fast=True)


_MEASUREMENT = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_MEASUREMENT_CM}
_EXTENSIONS = {"not": {"anyOf": [{"required": [name]} for name in UNSUPPORTED]}}
# The inference request as this server accepts it, for the OpenAPI document: tighter than
# the protocol's generic tensor (one input, named and shaped as the model needs).
REQUEST_SCHEMAS: dict[str, Any] = {
    "InferenceRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {"$ref": "#/components/schemas/InferenceInput"},
            },
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/InferenceOutput"},
            },
        },
    },
    "InferenceInput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": INPUT},
            "shape": {
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 1, "maximum": MAX_ELEMENTS // N_FEATURES},
                    {"const": N_FEATURES},
                ],
                "minItems": 2,
                "maxItems": 2,
            },
            "datatype": {"enum": list(INPUT_DATATYPES)},
            "parameters": {"type": "object", **_EXTENSIONS},
            "data": {
                "type": "array",
                "minItems": 1,
                "items": {
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
            },
        },
    },
    "InferenceOutput": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"enum": list(OUTPUTS)},
            "parameters": {"type": "object", **_EXTENSIONS},
        },
    },
}
INFER_PATHS = (
    "/v2/models/{model_name}/infer",
    "/v2/models/{model_name}/versions/{model_version}/infer",
)
