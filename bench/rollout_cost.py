"""What the rollout costs a request when no canary is set: the inference core with and
without its tallies, side by side in one process.

    .venv/bin/python bench/rollout_cost.py [--rounds 9]

Both cores serve the same default model from the same registry; one has the rollout's
:class:`~service.rollout.traffic.Traffic` (no canary, no shadow: the routing is one attribute
read, then the rows are tallied), the other none. Each round times one-row and 10,000-row
predictions of both, in alternating order; the figures are the medians over rounds of the
per-call time and of the ratio. Over HTTP a one-row /predict takes about 100 us of server
CPU, so the difference per call here is the share to compare with that.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from model.data import load_iris
from model.persistence import ModelStore
from service.inference import Inference
from service.registry import Registry, ensure_default_model
from service.rollout.store import RolloutStore, SqliteConnector
from service.rollout.traffic import Traffic

HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]


def per_call(work: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rollout-cost-"))
    store = ModelStore(root / "models")
    ensure_default_model(store, 0)
    registry = Registry(store)
    registry.refresh()
    rollout = RolloutStore(SqliteConnector(root / "monitoring.sqlite3"))
    rollout.initialize()
    traffic = Traffic(rollout, registry, window=1000, flush_seconds=0.5, threshold=0.2)
    cores = {
        "without": Inference(registry, 10_000, 2_000_000),
        "with": Inference(registry, 10_000, 2_000_000, traffic),
    }
    one = [load_iris().raw[0].tolist()]
    many = np.tile(load_iris().raw, (67, 1))[:10_000]
    points = {"1 row": (one, 50_000), "10,000 rows": (many, 100)}
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(cores) if round_ % 2 == 0 else list(reversed(cores))
        for point, (rows, calls) in points.items():
            for name in order:
                core = cores[name]
                seconds = per_call(lambda c=core, r=rows: c.predict(r, None, HEADERS), calls)
                times.setdefault((point, name), []).append(seconds)
        traffic.flush()  # as the flusher would, between rounds
    print(f"the inference core, with and without the rollout's tallies ({args.rounds} rounds)")
    print(f"  {'point':<12} {'without':>12} {'with':>12} {'difference':>12} {'ratio':>8}")
    for point in points:
        without, with_ = times[point, "without"], times[point, "with"]
        ratios = [w / o for w, o in zip(with_, without, strict=True)]
        print(
            f"  {point:<12} {statistics.median(without) * 1e6:>9.2f} us "
            f"{statistics.median(with_) * 1e6:>9.2f} us "
            f"{(statistics.median(with_) - statistics.median(without)) * 1e6:>9.2f} us "
            f"{statistics.median(ratios):>7.3f}x"
        )


if __name__ == "__main__":
    main()
