"""Models made up for tests and benchmarks that store, load or export weights."""

from __future__ import annotations

import numpy as np

from model.network import Model, Params, Standardizer


def random_model(hidden: int = 3, seed: int = 0) -> Model:
    """A model with random parameters and standardisation (not trained: for storage tests)."""
    rng = np.random.default_rng(seed)
    return Model(
        params=Params(
            W1=rng.standard_normal((hidden, 4)),
            b1=rng.standard_normal(hidden),
            W2=rng.standard_normal((3, hidden)),
            b2=rng.standard_normal(3),
        ),
        standardizer=Standardizer(mean=rng.uniform(1, 6, 4), std=rng.uniform(0.2, 2, 4)),
    )
