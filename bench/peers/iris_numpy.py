"""The Iris network's prediction in plain NumPy, for the peer servers of the HTTP benchmark.

MLServer and KServe's model server run in virtualenvs of their own, without this project
installed, so they cannot import ``model/``. This module repeats ``model.network``'s forward
pass (``predict_proba``) step by step on the arrays of an exported ``weights.npz`` (W1 b1 W2
b2 mean std, as ``model.persistence`` writes them); ``tests/test_peers.py`` checks that it
gives the same probabilities::

    X   = (raw - mean) / std
    h_a = X @ W1.T + b1,   h_s = relu(h_a)
    o_a = h_s @ W2.T + b2, o_s = softmax(o_a)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

CLASSES = ("setosa", "versicolor", "virginica")
N_FEATURES = 4
ARRAYS = ("W1", "b1", "W2", "b2", "mean", "std")


@dataclass(frozen=True)
class Weights:
    """The arrays of one stored model version."""

    W1: FloatArray
    b1: FloatArray
    W2: FloatArray
    b2: FloatArray
    mean: FloatArray
    std: FloatArray


def load_weights(path: str | Path) -> Weights:
    """Read ``weights.npz`` (no pickles) into :class:`Weights`."""
    with np.load(path, allow_pickle=False) as npz:
        missing = set(ARRAYS) - set(npz.files)
        if missing:
            raise ValueError(f"{path}: arrays {sorted(missing)} are missing")
        arrays = {name: np.ascontiguousarray(npz[name], dtype=np.float64) for name in ARRAYS}
    return Weights(**arrays)


def predict_proba(weights: Weights, raw: FloatArray) -> FloatArray:
    """Class probabilities o_s (n, 3) for raw measurements (n, 4) in centimetres."""
    X = (raw - weights.mean) / weights.std
    h_a = X @ weights.W1.T
    h_a += weights.b1
    h_s = np.maximum(h_a, 0.0)
    o_a = h_s @ weights.W2.T
    o_a += weights.b2
    # subtracting each row's maximum keeps exp() from overflowing
    e: FloatArray = o_a - o_a.max(axis=1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


def predict(weights: Weights, raw: FloatArray) -> tuple[FloatArray, IntArray, list[str]]:
    """Probabilities (n, 3), class indices (n,) and labels (n,): the three /v2 outputs."""
    o_s = predict_proba(weights, raw)
    index = o_s.argmax(axis=1).astype(np.int64)
    return o_s, index, [CLASSES[k] for k in index.tolist()]
