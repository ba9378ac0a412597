"""One source for the hyperparameters: the API schema and the CLI agree with the model core."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from model.__main__ import build_parser
from model.errors import HyperparameterError
from model.train import RULES, Hyperparameters, Interval, hyperparameter_fields
from service.schemas import HyperparametersIn

FIELDS = hyperparameter_fields()
BOUNDED = [(name, kind, allowed) for name, kind, _, allowed, _ in FIELDS if allowed is not None]


def core_accepts(**values: Any) -> bool:
    try:
        Hyperparameters(**values)
    except HyperparameterError:
        return False
    return True


def api_accepts(**values: Any) -> bool:
    try:
        HyperparametersIn(**values)
    except ValidationError:
        return False
    return True


def edges(kind: type, allowed: Interval) -> list[Any]:
    """Values at, just inside and just outside each end of ``allowed``."""
    if kind is int:
        values = [allowed.low - 1, allowed.low, allowed.low + 1]
        return [*values, allowed.high - 1, allowed.high, allowed.high + 1]
    values = [math.nextafter(allowed.low, -math.inf), allowed.low]
    values.append(math.nextafter(allowed.low, math.inf))
    if allowed.high != math.inf:
        values += [math.nextafter(allowed.high, -math.inf), allowed.high]
        values.append(math.nextafter(allowed.high, math.inf))
    return [*values, math.inf, math.nan]


def test_defaults_are_the_same_in_the_core_the_api_and_the_cli() -> None:
    core = Hyperparameters().to_dict()
    assert HyperparametersIn().model_dump() == core
    train = build_parser().parse_args(["train"])
    assert {name: getattr(train, name) for name in core} == core


@pytest.mark.parametrize(("name", "kind", "allowed"), BOUNDED, ids=[b[0] for b in BOUNDED])
def test_the_api_and_the_core_accept_exactly_the_same_values(
    name: str, kind: type, allowed: Interval
) -> None:
    for value in edges(kind, allowed):
        assert api_accepts(**{name: value}) == core_accepts(**{name: value}), (name, value)
        assert core_accepts(**{name: value}) == (not math.isnan(value) and value in allowed)


@pytest.mark.parametrize(("name", "kind", "allowed"), BOUNDED, ids=[b[0] for b in BOUNDED])
def test_the_openapi_schema_states_the_same_bounds(
    name: str, kind: type, allowed: Interval
) -> None:
    schema = HyperparametersIn.model_json_schema()["properties"][name]
    low = "exclusiveMinimum" if allowed.low_open else "minimum"
    assert schema[low] == allowed.low
    if allowed.high != math.inf:
        assert schema["exclusiveMaximum" if allowed.high_open else "maximum"] == allowed.high
    assert schema["type"] == {int: "integer", float: "number"}[kind]


def test_the_rules_across_fields_hold_in_the_core_the_api_and_the_schema() -> None:
    schema = HyperparametersIn.model_json_schema()
    for rule in RULES:
        refused = {rule.field: rule.value, rule.needs: rule.allowed.low}
        assert not core_accepts(**refused)
        assert not api_accepts(**refused)
        assert schema["if"]["properties"][rule.field] == {"const": rule.value}
        assert rule.needs in schema["then"]["required"]


def test_booleans_and_strings_are_not_numbers_anywhere() -> None:
    for name, kind, *_ in FIELDS:
        if kind is bool:
            continue
        for value in (True, "1"):
            assert not core_accepts(**{name: value}), name
            assert not api_accepts(**{name: value}), name
