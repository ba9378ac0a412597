"""What the in-suite fuzzing (tests/test_fuzz.py) and the live campaign (bench/fuzz_live.py)
judge alike: which refusals of a schema-valid request are explained, and how a case is pinned
to a stored model version.
"""

from __future__ import annotations

from typing import Any

from schemathesis.core.parameters import ParameterLocation

INFER = (
    "POST /v2/models/{model_name}/infer",
    "POST /v2/models/{model_name}/versions/{model_version}/infer",
)

# Per operation: (status, words of the problem's detail or the /v2 error) for each rule a
# schema-valid request can break without its schema saying so.
UNSTATABLE: dict[str, list[tuple[int, str]]] = {
    "POST /predict": [(422, "IRIS_MAX_INSTANCES")],
    "POST /gradients": [(422, "give one label per instance"), (422, "IRIS_MAX_INSTANCES")],
    "POST /train": [(422, "IRIS_MAX_TRAIN_ROWS"), (422, "every species needs at least")],
    "GET /models/{version}/regions": [(422, "must be two different features")],
    # A version in a body must be stored (and, for the routing, not stable).
    "POST /feedback": [
        (422, "give one label per instance"),
        (422, "IRIS_MAX_INSTANCES"),
        (422, "no stored model version"),
    ],
    "PUT /routing": [(422, "no stored model version"), (422, "is the stable version")],
    **{
        label: [
            (400, "values, data has"),  # shape [n, 4] against the number of values
            (400, "is nested as"),  # how the data nest against the shape
            (400, "data is ragged"),
            (400, "is requested more than once"),  # outputs are unique by name
            (400, "IRIS_MAX_INSTANCES"),
        ]
        for label in INFER
    },
}
# Every body is bounded by IRIS_MAX_BODY_BYTES, whatever its schema allows.
BODY_LIMIT = (413, "IRIS_MAX_BODY_BYTES")


def refusal_explained(label: str, status: int, body: Any) -> bool:
    """True for a documented 4xx whose detail names a rule the schema cannot state."""
    if not isinstance(body, dict):
        return False
    text = str(body.get("detail") or body.get("error") or "")
    rules = [*UNSTATABLE.get(label, []), BODY_LIMIT]
    return any(status == code and words in text for code, words in rules)


def json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def pin_stored_version(case: Any, version: str) -> None:
    """A schema-valid version is any string; in a schema-valid case, make it a stored one."""
    if case.meta is None or case.meta.is_negative_at(ParameterLocation.PATH):
        return
    for key in ("version", "model_version"):
        if key in case.path_parameters:
            case.path_parameters[key] = version
