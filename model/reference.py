"""What a version was trained on, as one histogram per feature, and the population stability
index (PSI) of new inputs against it.

A version's **reference** holds, per feature, the edges of its bins (the training data's
deciles, ties merged) and the fraction of the training rows in each bin. A row falls in bin
``i`` when ``edges[i-1] < value <= edges[i]`` (the first bin has no lower edge, the last no
upper one), for the reference and for new rows alike, so the training rows themselves score
a PSI of exactly 0.

The PSI of a window of new rows against a reference, per feature, is
``sum((a_i - e_i) * ln(a_i / e_i))`` over the bins, with ``e_i`` the reference fractions and
``a_i`` the window's, each floored at :data:`FLOOR` so that an empty bin counts as rare
rather than infinite (the usual practice). Below 0.1 is commonly read as no shift, above 0.2
as a shift worth acting on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.network import FloatArray

BINS = 10
FLOOR = 1e-4
_DECILES = np.linspace(0.0, 1.0, BINS + 1)[1:-1]


def input_reference(raw: FloatArray, features: tuple[str, ...]) -> dict[str, Any]:
    """The reference of training rows ``raw`` (n, 4): per feature its bins' edges and the
    fraction of the rows in each bin, as model.json keeps it."""
    columns = {}
    for j, name in enumerate(features):
        column = raw[:, j]
        edges = np.unique(np.quantile(column, _DECILES))
        columns[name] = {"edges": edges.tolist(), "fractions": fractions(column, edges).tolist()}
    return {"source": "training rows", "rows": int(raw.shape[0]), "features": columns}


def fractions(column: FloatArray, edges: FloatArray) -> FloatArray:
    """The fraction of ``column``'s values in each bin of ``edges`` (len(edges) + 1 bins)."""
    counts = np.bincount(np.searchsorted(edges, column, side="left"), minlength=edges.size + 1)
    total: FloatArray = counts / max(column.size, 1)
    return total


def psi(expected: FloatArray, actual: FloatArray) -> float:
    """The population stability index of bin fractions ``actual`` against ``expected``."""
    e = np.maximum(expected, FLOOR)
    a = np.maximum(actual, FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(
    reference: dict[str, Any], rows: FloatArray, features: tuple[str, ...]
) -> dict[str, float]:
    """Each feature's PSI of rows (n, 4) against ``reference``."""
    scores = {}
    for j, name in enumerate(features):
        bins = reference["features"][name]
        edges = np.asarray(bins["edges"], dtype=np.float64)
        expected = np.asarray(bins["fractions"], dtype=np.float64)
        scores[name] = psi(expected, fractions(rows[:, j], edges))
    return scores
