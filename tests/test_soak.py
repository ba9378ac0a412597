"""A short run of the soak of harness/soak.py (`make soak` runs the full one), and its checker.

The soak test starts ``iris-serve`` (1 and 2 workers) and holds 8 keep-alive connections
posting /predict for 8 s from a load-generator process, while 2 training jobs and 2
activations swap the served model; every answer must be 200 and bit-for-bit the math of the
version it names, RSS and open file descriptors must hold steady. The same code as
`make soak`, with smaller figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from harness import soak
from model.data import CLASSES
from model.network import predict_proba
from model.persistence import ModelStore
from model.train import TrainResult

SHORT = soak.SoakConfig(seconds=8.0, connections=8, retrains=2, activations=2, warmup=2.0, tail=1.0)


def answer(version: str, o_s: np.ndarray) -> bytes:
    """A /predict answer as the service writes it (orjson, shortest round-trip floats)."""
    predictions = [
        {
            "label": CLASSES[int(np.argmax(p))],
            "class_index": int(np.argmax(p)),
            "probabilities": dict(zip(CLASSES, p, strict=True)),
        }
        for p in o_s.tolist()
    ]
    return orjson.dumps({"model_version": version, "predictions": predictions})


def test_checker_accepts_the_exact_math_and_refuses_one_ulp_off(
    store: ModelStore, trained: TrainResult
) -> None:
    version = store.save(trained.model, activate=True)
    bodies = soak.make_bodies()
    checker = soak.Checker(store.root, bodies)
    index = len(bodies) - 1  # 50 rows
    o_s = predict_proba(trained.model, bodies[index].raw)

    assert checker.check(answer(version, o_s), index, None) == (None, version)
    assert checker.check(answer(version, o_s), index, version) == (None, version)

    nudged = o_s.copy()
    nudged[17, 1] = np.nextafter(nudged[17, 1], 1.0)
    problem, _ = checker.check(answer(version, nudged), index, None)
    assert problem is not None
    assert problem.startswith(f"row 17 of body {index}: probabilities")

    other = store.save(trained.model)
    problem, _ = checker.check(answer(version, o_s), index, other)
    assert problem == f"asked for version {other}, the answer names {version}"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_short_soak_answers_match_their_version_through_retrains_and_swaps(
    tmp_path: Path, workers: int
) -> None:
    result = soak.run_soak(workers, SHORT, tmp_path)
    print(soak.render(result))
    log = Path(result["server_log"]).read_text(errors="replace")[-5000:]
    assert result["passed"], f"{soak.render(result)}\n----- server log (tail)\n{log}"
    assert result["requests"] > 0
    assert result["retrains"] == SHORT.retrains
    assert result["activations"] == SHORT.activations
    assert len(result["versions_seen"]) >= 2
    assert len(result["server_pids"]) == (1 if workers == 1 else workers + 1)
