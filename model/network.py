"""The two-layer perceptron: parameters, forward pass, cross-entropy and backpropagation.

For a batch of row vectors X (n, 4) of standardised measurements::

    h_a = X @ W1.T + b1      (n, H)      W1: (H, 4)   b1: (H,)
    h_s = relu(h_a)          (n, H)
    o_a = h_s @ W2.T + b2    (n, 3)      W2: (3, H)   b2: (3,)
    o_s = softmax(o_a)       (n, 3)      classes: setosa, versicolor, virginica
    L_i = -log o_s[i, y_i]

Backpropagation (:func:`backward`), row vectors, Y the one-hot labels; for the mean loss
every per-sample derivative carries the 1/n::

    do_a = o_s - Y                     (n, 3)   softmax and cross-entropy together
    dW2  = do_a.T @ h_s                (3, H)   db2 = sum of do_a's rows   (3,)
    dh_s = do_a @ W2                   (n, H)
    dh_a = dh_s * 1[h_a > 0]           (n, H)   the ReLU passes gradient where it was active
    dW1  = dh_a.T @ X                  (H, 4)   db1 = sum of dh_a's rows   (H,)
    dx   = dh_a @ W1                   (n, 4)   and dL/d(raw cm) = dx / std

and a training step moves theta <- theta - learning_rate * dL/dtheta.

Everything is float64. A ``d`` prefix names a derivative of the loss: ``do_a`` is dL/do_a.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Reduction = Literal["mean", "sum", "none"]

N_FEATURES = 4
N_CLASSES = 3
REDUCTIONS: tuple[Reduction, ...] = ("mean", "sum", "none")


@dataclass(frozen=True)
class Params:
    """The network's parameters (or, from :func:`backward`, their gradients)."""

    W1: FloatArray
    b1: FloatArray
    W2: FloatArray
    b2: FloatArray

    @property
    def hidden_units(self) -> int:
        return int(self.W1.shape[-2])

    def arrays(self) -> dict[str, FloatArray]:
        return {"W1": self.W1, "b1": self.b1, "W2": self.W2, "b2": self.b2}


@dataclass(frozen=True)
class Standardizer:
    """Per-feature mean and standard deviation of the training data: x = (raw - mean) / std."""

    mean: FloatArray
    std: FloatArray

    @classmethod
    def fit(cls, raw: FloatArray) -> Standardizer:
        """Fit on raw measurements (n, 4); a constant feature gets std 1, not a division by 0."""
        std = raw.std(axis=0)
        return cls(mean=raw.mean(axis=0), std=np.where(std > 0, std, 1.0))

    def transform(self, raw: FloatArray) -> FloatArray:
        return (raw - self.mean) / self.std

    @functools.cached_property
    def columns(self) -> tuple[list[float], list[float]]:
        """mean and std as Python floats, for :func:`predict_one`."""
        return self.mean.tolist(), self.std.tolist()

    def inverse(self, X: FloatArray) -> FloatArray:
        return X * self.std + self.mean


@dataclass(frozen=True)
class Model:
    """A trained network with the standardisation it was trained with."""

    params: Params
    standardizer: Standardizer


@dataclass(frozen=True)
class Cache:
    """Forward intermediates for a batch, kept for the backward pass."""

    X: FloatArray
    h_a: FloatArray
    h_s: FloatArray
    o_a: FloatArray
    o_s: FloatArray


@dataclass(frozen=True)
class Gradients:
    """dL/d(everything) for a batch.

    ``params`` holds dW1, db1, dW2, db2 (with a leading sample axis for reduction ``none``).
    ``do_a``, ``dh_s``, ``dh_a`` and ``dx`` have one row per sample: for ``mean`` they are
    the derivatives of the mean loss (so carry the 1/n), for ``sum`` and ``none`` those of
    each sample's own loss.
    """

    params: Params
    do_a: FloatArray
    dh_s: FloatArray
    dh_a: FloatArray
    dx: FloatArray


def init_params(hidden_units: int, rng: np.random.Generator) -> Params:
    """He initialisation: W ~ N(0, 2 / fan_in), suited to the ReLU that follows W1; zero biases.

    The draw order (W1 then W2) is part of the determinism contract: same seed, same weights.
    """
    if hidden_units < 1:
        raise ValueError(f"hidden_units must be at least 1, got {hidden_units}")
    W1 = rng.standard_normal((hidden_units, N_FEATURES)) * np.sqrt(2.0 / N_FEATURES)
    W2 = rng.standard_normal((N_CLASSES, hidden_units)) * np.sqrt(2.0 / hidden_units)
    return Params(W1=W1, b1=np.zeros(hidden_units), W2=W2, b2=np.zeros(N_CLASSES))


# Up to this many rows a reduction along axis 1 is one call; past it, column by column.
FEW_ROWS = 64


def row_max(a: FloatArray) -> FloatArray:
    """Maximum of each row, as a column (n, 1).

    Taken column by column for many rows: with 3 classes, a reduction along axis 1 runs a
    short inner loop per row and is 20x slower than 2 element-wise maxima over whole columns.
    For a few rows the single reduction is the cheaper call (the same values either way).
    """
    if a.shape[0] <= FEW_ROWS:
        return a.max(axis=1, keepdims=True)  # type: ignore[no-any-return]
    return functools.reduce(np.maximum, a.T)[:, None]  # type: ignore[no-any-return]


def row_sum(a: FloatArray) -> FloatArray:
    """Sum of each row, as a column (n, 1), added left to right like np.sum(axis=1) (which
    adds a row of 3 left to right too, so both ways give the same bits)."""
    if a.shape[0] <= FEW_ROWS:
        return a.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
    return functools.reduce(np.add, a.T)[:, None]  # type: ignore[no-any-return]


def softmax(o_a: FloatArray) -> FloatArray:
    """Row-wise softmax; subtracting the row maximum keeps exp() from overflowing."""
    e: FloatArray = o_a - row_max(o_a)
    np.exp(e, out=e)
    e /= row_sum(e)
    return e


def log_softmax(o_a: FloatArray) -> FloatArray:
    """Row-wise log-softmax, o_a - logsumexp(o_a): finite for logits of any finite size.

    Taking log(softmax(o_a)) instead would give -inf once a probability underflows to 0.
    """
    shifted: FloatArray = o_a - row_max(o_a)
    shifted -= np.log(row_sum(np.exp(shifted)))
    return shifted


def forward(params: Params, X: FloatArray) -> Cache:
    """Forward pass for X (n, 4) standardised measurements.

    The biases are added in place to the fresh matmul results: a second (n, H) temporary
    would cost more than the matmul itself at 100,000 rows.
    """
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"X must have shape (n, {N_FEATURES}), got {X.shape}")
    h_a = X @ params.W1.T
    h_a += params.b1
    h_s = np.maximum(h_a, 0.0)
    o_a = h_s @ params.W2.T
    o_a += params.b2
    return Cache(X=X, h_a=h_a, h_s=h_s, o_a=o_a, o_s=softmax(o_a))


def check_labels(y: IntArray, n: int) -> None:
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if n and (y.min() < 0 or y.max() >= N_CLASSES):
        raise ValueError(f"labels must be class indices in 0..{N_CLASSES - 1}")


def loss(cache: Cache, y: IntArray, reduction: Reduction = "mean") -> FloatArray:
    """Cross-entropy -log o_s[i, y_i]; a 0-d array for ``mean``/``sum``, (n,) for ``none``."""
    check_labels(y, cache.o_a.shape[0])
    per_sample = -log_softmax(cache.o_a)[np.arange(y.shape[0]), y]
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return np.asarray(per_sample.sum())
    if reduction == "mean":
        return np.asarray(per_sample.mean())
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def backward(params: Params, cache: Cache, y: IntArray, reduction: Reduction = "mean") -> Gradients:
    """Backpropagate the cross-entropy of ``cache`` with labels ``y`` (n,).

    Returns
    -------
    Gradients
        For ``mean`` and ``sum``, parameter gradients in the parameters' shapes; for ``none``,
        per-sample gradients with a leading sample axis: dW1 (n, H, 4), db1 (n, H),
        dW2 (n, 3, H), db2 (n, 3), computed as batched outer products, not a loop.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    n = cache.o_s.shape[0]
    check_labels(y, n)
    # Softmax and cross-entropy differentiate together to o_s - onehot(y),
    # so the softmax Jacobian is never formed.
    do_a = cache.o_s.copy()
    do_a[np.arange(n), y] -= 1.0
    if reduction == "mean":
        do_a /= n  # the mean divides every sample's share by n
    dh_s, dh_a = hidden_gradients(params, cache, do_a)
    dx = dh_a @ params.W1
    if reduction == "none":
        grads = Params(
            W1=np.einsum("nh,nf->nhf", dh_a, cache.X),
            b1=dh_a.copy(),
            W2=np.einsum("nk,nh->nkh", do_a, cache.h_s),
            b2=do_a.copy(),
        )
    else:
        grads = summed_parameter_gradients(cache, do_a, dh_a)
    return Gradients(params=grads, do_a=do_a, dh_s=dh_s, dh_a=dh_a, dx=dx)


def hidden_gradients(
    params: Params, cache: Cache, do_a: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """dh_s = do_a W2 and dh_a = dh_s * 1[h_a > 0]."""
    dh_s = do_a @ params.W2
    return dh_s, dh_s * (cache.h_a > 0)  # gradient flows only where the ReLU was active


def summed_parameter_gradients(cache: Cache, do_a: FloatArray, dh_a: FloatArray) -> Params:
    """dW1 = dh_a^T X, db1 = sum of dh_a rows, dW2 = do_a^T h_s, db2 = sum of do_a rows."""
    # The bias gradients sum the rows; as a matrix-vector product (ones @ rows) the BLAS
    # does it 8x faster than sum(axis=0) over a tall, narrow array.
    ones = np.ones(do_a.shape[0])
    return Params(W1=dh_a.T @ cache.X, b1=ones @ dh_a, W2=do_a.T @ cache.h_s, b2=ones @ do_a)


def one_hot(y: IntArray) -> FloatArray:
    """Rows Y (n, 3) with a 1 in column y_i: the targets the softmax is compared with."""
    Y = np.zeros((y.shape[0], N_CLASSES))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def mean_gradients(params: Params, cache: Cache, Y: FloatArray) -> Params:
    """dL/dtheta of the mean loss for one-hot targets Y (n, 3): the training step's path.

    :func:`backward` with ``mean`` and the same bits (o_s - Y subtracts exactly 1 at each
    label and 0 elsewhere), without its label checks (training checks once) and without dx.
    """
    do_a = (cache.o_s - Y) / Y.shape[0]
    _, dh_a = hidden_gradients(params, cache, do_a)
    return summed_parameter_gradients(cache, do_a, dh_a)


def raw_input_gradient(dx: FloatArray, standardizer: Standardizer) -> FloatArray:
    """dL/d(raw cm) from dL/dx: x = (raw - mean) / std, so dx/draw = 1 / std."""
    return dx / standardizer.std


def predict_proba(model: Model, raw: FloatArray) -> FloatArray:
    """Class probabilities o_s (n, 3) for raw measurements in centimetres (n, 4)."""
    return forward(model.params, model.standardizer.transform(raw)).o_s


# predict_proba_chunked's chunks: h_a and h_s (rows, H) together take about CHUNK_BYTES
# (1,024 rows at H = 1024, every row at once for a narrow model), and never fewer than
# MIN_CHUNK_ROWS rows. The BLAS picks its kernels by size, and some add a row's products in
# another order: OpenBLAS (0.3.31, AVX-512) takes h_s @ W2.T with its small-matrix kernel up
# to 400 rows and one row with gemv, so smaller chunks differ from one pass in the last bits.
# Its edge kernels, where its blocks split the rows, do the same at some widths (255, 300,
# 333, 500, ... units: a few of 10,000 rows, by 1e-16 or less, never the class or a 4-decimal
# confidence); one pass over all rows differs the same way between 1 and 2 BLAS threads.
CHUNK_BYTES = 16 * 2**20
MIN_CHUNK_ROWS = 1024


def chunk_rows(hidden_units: int) -> int:
    """The fewest rows of a chunk: h_a and h_s (rows, H) take about CHUNK_BYTES."""
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (2 * 8 * hidden_units))


def predict_proba_chunked(model: Model, raw: FloatArray, rows: int | None = None) -> FloatArray:
    """:func:`predict_proba` of raw measurements (n, 4), in chunks of at least ``rows`` rows.

    Every step of the forward pass works on each row alone, so only the (n, H) temporaries
    shrink, to (rows, H) up to (2 rows - 1, H); the probabilities are those of one pass over
    all n rows, bit for bit, where the BLAS adds each row's products in the same order for a
    chunk as for the whole (see MIN_CHUNK_ROWS; tests/test_network.py holds it to that at
    4 to 1024 units).
    ``rows`` defaults to :func:`chunk_rows` of the model's width.

    Returns
    -------
    FloatArray
        o_s (n, 3): each row's class probabilities.
    """
    rows = rows or chunk_rows(model.params.hidden_units)
    n = raw.shape[0]
    if n < 2 * rows:
        return predict_proba(model, raw)
    o_s: FloatArray = np.empty((n, N_CLASSES))
    start = 0
    # n // rows chunks of equal size (within a row): none smaller than rows, no short tail
    for chunk in np.array_split(raw, n // rows):
        o_s[start : start + chunk.shape[0]] = predict_proba(model, chunk)
        start += chunk.shape[0]
    return o_s


def predict_one(model: Model, raw: Sequence[float]) -> list[float]:
    """:func:`predict_proba` of one row of raw measurements in cm (4,), as Python floats: the
    same bits from a third of the NumPy calls, which cost more than the arithmetic of a row.

    Every value goes through the operation :func:`forward` applies to it. The matrix products,
    the bias sums, the ReLU and exp() are NumPy's, on arrays of the shapes forward() gives
    them. The element-wise steps are Python's: the standardisation, the shift by the row
    maximum (a maximum is exact whatever its order) and the normalisation; Python floats are
    IEEE float64 and round each operation as NumPy's element-wise ufuncs do. The three
    exponentials are added left to right, as NumPy adds a row of 3. tests/test_network.py
    holds this to predict_proba bit for bit.
    """
    mean, std = model.standardizer.columns
    x0, x1, x2, x3 = raw
    m0, m1, m2, m3 = mean
    s0, s1, s2, s3 = std
    X = np.array([[(x0 - m0) / s0, (x1 - m1) / s1, (x2 - m2) / s2, (x3 - m3) / s3]])
    params = model.params
    h_a = X @ params.W1.T
    h_a += params.b1
    o_a = np.maximum(h_a, 0.0, out=h_a) @ params.W2.T
    o_a += params.b2
    ((a0, a1, a2),) = o_a.tolist()
    o_a -= max(a0, a1, a2)
    np.exp(o_a, out=o_a)
    ((e0, e1, e2),) = o_a.tolist()
    total = e0 + e1 + e2
    return [e0 / total, e1 / total, e2 / total]
