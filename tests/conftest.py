"""Shared fixtures, one section per package under test.

Fixtures that only one test module needs live in that module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.postgres import PgCluster, unavailable_reason

# Apps built in this process serve no gRPC (a test that wants it starts a server process with
# IRIS_GRPC_PORT): service.rpc's generated messages and tritonclient.grpc's have the protocol's
# names, and tests/test_grpc.py imports the latter into this process.
os.environ["IRIS_GRPC_PORT"] = "0"
from model.data import Dataset, load_iris
from model.persistence import ModelStore
from model.train import Hyperparameters, TrainResult, train

# ---------------------------------------------------------------------------------------------
# model/ (the model core)
# ---------------------------------------------------------------------------------------------

# Few epochs: these fixtures need a real trained model, not a good one.
SMALL_HYPERPARAMETERS = Hyperparameters(epochs=20, validation_fraction=0.2, seed=3)


@pytest.fixture(scope="session")
def iris() -> Dataset:
    """The shipped Iris data (read-only: do not modify its arrays)."""
    return load_iris()


@pytest.fixture(scope="session")
def small_hyperparameters() -> Hyperparameters:
    return SMALL_HYPERPARAMETERS


@pytest.fixture(scope="session")
def trained(iris: Dataset) -> TrainResult:
    """A quickly trained model with history and validation metrics (read-only)."""
    return train(iris, SMALL_HYPERPARAMETERS)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """An empty model store in a fresh directory (``tmp_path / "models"``, not yet created)."""
    return ModelStore(tmp_path / "models")


# ---------------------------------------------------------------------------------------------
# service/ (the HTTP layer): its fixtures go below this line
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the session (harness/postgres.py).

    Missing server programs skip the test with the reason, except in CI (CI=true), where
    they are a failure: CI must run these tests.
    """
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and PostgreSQL is not available: {reason}")
        pytest.skip(f"PostgreSQL is not available: {reason}")
    cluster = PgCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()
