"""The HTTP benchmark's helpers: the peers' NumPy runtime and the ceiling server.

The peers (MLServer, KServe) are not installed here; what can be checked without them is
that the computation their runtimes share gives our probabilities, and that the MLServer
settings name a class the runtime module defines. The ceiling runs as a real process.
"""

from __future__ import annotations

import ast
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from harness.models import random_model
from harness.modules import load_module
from harness.servers import free_port
from model.data import CLASSES, Dataset
from model.network import Model, predict_proba
from model.persistence import weights_bytes

BENCH = Path(__file__).resolve().parents[1] / "bench"
PEERS = BENCH / "peers"


@pytest.fixture(scope="module")
def iris_numpy() -> ModuleType:
    return load_module(PEERS / "iris_numpy.py")


def exported(model: Model, tmp_path: Path, iris_numpy: ModuleType) -> object:
    path = tmp_path / "weights.npz"
    path.write_bytes(weights_bytes(model))
    return iris_numpy.load_weights(path)


@pytest.mark.parametrize("hidden", [1, 4, 16])
def test_peer_runtime_gives_our_probabilities(
    hidden: int, iris: Dataset, tmp_path: Path, iris_numpy: ModuleType
) -> None:
    model = random_model(hidden, seed=hidden)
    weights = exported(model, tmp_path, iris_numpy)
    o_s, index, labels = iris_numpy.predict(weights, iris.raw)
    ours = predict_proba(model, iris.raw)
    np.testing.assert_allclose(o_s, ours, rtol=0, atol=1e-12)
    assert index.dtype == np.int64
    np.testing.assert_array_equal(index, ours.argmax(axis=1))
    assert labels == [CLASSES[k] for k in ours.argmax(axis=1)]


def test_peer_runtime_is_stable_for_large_logits(tmp_path: Path, iris_numpy: ModuleType) -> None:
    model = random_model(4, seed=1)
    scaled = Model(
        params=type(model.params)(
            W1=model.params.W1 * 1e3,
            b1=model.params.b1,
            W2=model.params.W2 * 1e3,
            b2=model.params.b2,
        ),
        standardizer=model.standardizer,
    )
    weights = exported(scaled, tmp_path, iris_numpy)
    raw = np.array([[5.1, 3.5, 1.4, 0.2], [7.7, 2.6, 6.9, 2.3]])
    o_s, _, _ = iris_numpy.predict(weights, raw)
    assert np.isfinite(o_s).all()
    np.testing.assert_allclose(o_s, predict_proba(scaled, raw), rtol=0, atol=1e-12)


def test_peer_runtime_refuses_weights_without_an_array(
    tmp_path: Path, iris_numpy: ModuleType
) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, W1=np.ones((2, 4)), b1=np.zeros(2))
    path = tmp_path / "weights.npz"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="W2"):
        iris_numpy.load_weights(path)


def test_mlserver_settings_name_the_runtime_class() -> None:
    folder = PEERS / "mlserver_iris"
    settings = json.loads((folder / "model-settings.json").read_text())
    module, _, name = settings["implementation"].rpartition(".")
    tree = ast.parse((folder / f"{module}.py").read_text())
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert name in classes
    assert settings["name"] == "iris"  # the path the benchmark posts to: /v2/models/iris/infer
    server = json.loads((folder / "settings.json").read_text())
    assert server["parallel_workers"] == 0  # one process, like the service's one worker


@pytest.fixture
def ceiling_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = os.environ | {"IRIS_HOST": "127.0.0.1", "IRIS_PORT": str(port)}
    env["CEILING_BODY_BYTES"] = "300"
    with open(tmp_path / "ceiling.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / "ceiling.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        (tmp_path / "ceiling.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_ceiling_answers_the_constant_body_without_a_server_header(ceiling_port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", ceiling_port, timeout=5)
    try:
        conn.request("POST", "/predict", b'{"instances": []}', {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert len(body) == 300
    assert json.loads(body)["predictions"][0]["label"] == "setosa"
    assert response.getheader("server") is None
    assert response.getheader("content-type") == "application/json"
