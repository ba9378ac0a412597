"""Schemathesis over the app's own OpenAPI document, through ASGI, inside the suite.

Every operation the document lists gets schema-valid and schema-violating requests (the
examples, coverage and fuzzing phases) carrying the bearer token, and every built-in check
judges the answers: no 5xx, only documented status codes and content types, bodies that
match their response schemas, invalid data refused, valid data accepted, a 405 whose
``Allow`` lists exactly the documented methods. Generation is derandomized, so a run is
repeatable; ``bench/fuzz_live.py`` runs the longer campaign against a live server.

A schema-valid request may still be refused for a rule JSON Schema cannot state (labels as
many as instances, a tensor's shape against its data, a configured row or size limit); such
a refusal passes only with the documented status and a detail naming that rule
(``harness.fuzz.UNSTATABLE``). Training jobs the fuzzer starts are ended at once (``end_job``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI

from harness.api import end_job
from harness.fuzz import json_or_none, pin_stored_version, refusal_explained
from model.persistence import ModelStore
from service.config import Settings
from service.main import create_app
from service.registry import ensure_default_model

TOKEN = "fuzz-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 25  # per operation and phase; about 20 s for the whole document


def fuzz_settings(data_dir: Path) -> Settings:
    """Small limits: a training set of at most 30 rows, 50 rows a prediction, 64 KiB a body."""
    return Settings(
        data_dir=data_dir,
        api_token=TOKEN,
        model_poll_seconds=0.05,
        max_instances=50,
        max_body_bytes=64 * 1024,
        max_train_rows=30,
    )


# The document does not depend on the settings: it is read from an app that never starts.
schema = schemathesis.openapi.from_dict(create_app(fuzz_settings(Path("unused"))).openapi())
schema.config.update(headers=AUTH, parameters={"path.model_name": "iris"})
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")


@pytest.fixture(scope="module")
def fuzz_settings_(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return fuzz_settings(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def fuzz_app(fuzz_settings_: Settings) -> FastAPI:
    """The app under test; schemathesis runs its lifespan once per operation."""
    return create_app(fuzz_settings_)


@pytest.fixture(scope="module")
def active_version(fuzz_settings_: Settings) -> str:
    """The default model, trained before the app starts (its lifespan then finds it)."""
    store = ModelStore(fuzz_settings_.models_dir)
    ensure_default_model(store, fuzz_settings_.seed)
    return store.current()


@schema.parametrize()
def test_every_operation_honours_its_openapi_contract(
    case: Any, fuzz_app: FastAPI, active_version: str
) -> None:
    # The requests checks send themselves (an ignored_auth probe without the token) go to
    # the schema's app: make it this one.
    case.operation.schema.app = fuzz_app
    pin_stored_version(case, active_version)
    response = None
    try:
        response = case.call(app=fuzz_app)
        explained = refusal_explained(
            case.operation.label, response.status_code, json_or_none(response)
        )
        case.validate_response(
            response,
            excluded_checks=[schemathesis.checks.positive_data_acceptance] if explained else [],
            transport_kwargs={"app": fuzz_app},
        )
    finally:
        started = response is not None and response.status_code == 202
        if started and case.operation.label == "POST /train":
            end_job(fuzz_app, response.json()["job_id"])
