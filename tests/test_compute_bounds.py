"""The compute routes of a wide stored version against a real ``iris-serve``: decision
regions, evaluation and parameters run in the bounded compute pool, their forward passes in
chunks, so many anonymous clients at once neither fail nor take the memory of one pass each.

The server runs on 127.0.0.1 with its own data directory and is always stopped (see
harness/servers.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.servers import ServerProcess, server_pool
from model.data import load_iris
from model.network import Model, Standardizer, init_params, predict_proba
from model.persistence import ModelStore

pytestmark = pytest.mark.slow

TOKEN = "compute-bounds-test-token-0123456789"
CLIENTS = 40  # as many as anyio's default thread pool has threads
WIDE = 1024  # the widest hidden layer training accepts
# One pass over a 100 x 100 grid at 1024 units holds two (10,000, 1024) float64 arrays
# (164 MB) per request: 40 at once took the RSS past 5 GB before the compute pool and chunks.
MAX_GROWTH_MIB = 300


def status_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak RSS) of ``pid``, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def random_model(hidden: int, seed: int) -> Model:
    raw = load_iris().raw
    rng = np.random.default_rng(seed)
    return Model(init_params(hidden, rng), Standardizer(raw.mean(axis=0), raw.std(axis=0)))


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, Model]]:
    """A server whose store holds a 1024-unit version (not the active one) besides a small one."""
    store = ModelStore(tmp_path / "data" / "models")
    store.save(random_model(4, 0), {}, activate=True)
    model = random_model(WIDE, 1)
    version = store.save(model, {})
    with server_pool(tmp_path) as start:
        yield start(None, {"IRIS_API_TOKEN": TOKEN}), version, model


def test_forty_clients_of_wide_regions_all_answer_and_memory_stays_bounded(
    wide: tuple[ServerProcess, str, Model],
) -> None:
    server, version, model = wide
    regions = f"/models/{version}/regions"
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        first = client.get(regions, params={"steps": 100})  # loads the version once
        assert first.status_code == 200, first.text
    before = status_mib(server.pid)

    def ask(k: int) -> int:
        path = (regions, f"/models/{version}/evaluation", f"/models/{version}/parameters")[k % 3]
        with httpx.Client(base_url=server.url, timeout=120.0) as client:
            return client.get(path, params={"steps": 100} if path == regions else {}).status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        codes = Counter(pool.map(ask, range(3 * CLIENTS)))
    after = status_mib(server.pid)
    print(f"{dict(codes)}; RSS before {before}, after {after} (MiB)")
    assert codes == Counter({200: 3 * CLIENTS}), codes
    assert after["VmHWM"] - before["VmRSS"] <= MAX_GROWTH_MIB, (before, after)

    # the chunked passes answer as one pass over the whole grid
    body = first.json()
    xs, ys = np.meshgrid(body["x"]["values"], body["y"]["values"])
    fixed = body["fixed"]
    raw = np.column_stack(
        [
            np.full(xs.size, fixed["sepal_length"]),
            np.full(xs.size, fixed["sepal_width"]),
            xs.ravel(),
            ys.ravel(),
        ]
    )
    o_s = predict_proba(model, raw)
    assert body["class_index"] == o_s.argmax(axis=1).reshape(100, 100).tolist()
    assert body["confidence"] == o_s.max(axis=1).round(4).reshape(100, 100).tolist()
