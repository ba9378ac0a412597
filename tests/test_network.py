"""The network: forward pass, loss, backpropagation and the stability of softmax.

Gradients are checked against central finite differences of a reference loss written out
here from the formulas in model/network.py's docstring (not network.loss), in float64, on
tiny nets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from model.network import (
    REDUCTIONS,
    Model,
    Params,
    Reduction,
    Standardizer,
    backward,
    forward,
    init_params,
    log_softmax,
    loss,
    predict_one,
    predict_proba,
    raw_input_gradient,
    softmax,
)

FloatArray = np.ndarray
EPS = 1e-6  # central-difference step: truncation ~EPS**2, rounding ~1e-16 / EPS
TOLERANCE = 1e-6  # relative error allowed between backward() and finite differences
HIDDEN_SIZES = (1, 3, 16)
N_SAMPLES = 5
KINK_MARGIN = 1e-3  # no |h_a| this close to the ReLU kink, so +-EPS never flips a unit


# -- a reference implementation of the loss, straight from the formulas ----------------------


def per_sample_loss_from_logits(o_a: FloatArray, y: np.ndarray) -> FloatArray:
    """L_i = logsumexp(o_a[i]) - o_a[i, y_i], with the maximum taken out for stability."""
    top = o_a.max(axis=1)
    logsumexp = top + np.log(np.exp(o_a - top[:, None]).sum(axis=1))
    return logsumexp - o_a[np.arange(y.shape[0]), y]


def logits(W1: FloatArray, b1: FloatArray, W2: FloatArray, b2: FloatArray, X: FloatArray):
    h_a = X @ W1.T + b1
    return np.maximum(h_a, 0.0) @ W2.T + b2


def reduce(per_sample: FloatArray, reduction: Reduction) -> FloatArray:
    if reduction == "mean":
        return np.asarray(per_sample.mean())
    if reduction == "sum":
        return np.asarray(per_sample.sum())
    return per_sample


def central_difference(f: Callable[[FloatArray], FloatArray], at: FloatArray) -> FloatArray:
    """d f / d at by central differences; shape f(at).shape + at.shape."""
    at = np.array(at, dtype=np.float64)
    out: FloatArray | None = None
    for index in np.ndindex(at.shape):
        original = at[index]
        at[index] = original + EPS
        up = np.asarray(f(at), dtype=np.float64)
        at[index] = original - EPS
        down = np.asarray(f(at), dtype=np.float64)
        at[index] = original
        if out is None:
            out = np.empty(up.shape + at.shape)
        out[(..., *index)] = (up - down) / (2 * EPS)
    assert out is not None
    return out


def relative_error(actual: FloatArray, expected: FloatArray) -> float:
    assert actual.shape == expected.shape
    scale = max(float(np.linalg.norm(actual)), float(np.linalg.norm(expected)))
    if scale == 0.0:
        return 0.0
    return float(np.linalg.norm(actual - expected)) / scale


def own_rows(f: Callable[[FloatArray], FloatArray], at: FloatArray, reduction: Reduction):
    """Finite-difference dL/d(row i of ``at``), where row i feeds only sample i's loss.

    For ``mean`` and ``sum``, of the reduced loss; for ``none``, of sample i's own loss.
    """
    if reduction != "none":
        return central_difference(lambda a: reduce(f(a), reduction), at)
    jacobian = central_difference(f, at)  # (n, n, k): d L_i / d at[j, :]
    n = at.shape[0]
    off_diagonal = jacobian.copy()
    off_diagonal[np.arange(n), np.arange(n)] = 0.0
    assert not off_diagonal.any(), "a sample's loss must not depend on another sample's row"
    return jacobian[np.arange(n), np.arange(n)]


# -- cases ----------------------------------------------------------------------------------


def generic_case(hidden: int) -> tuple[Params, FloatArray, np.ndarray]:
    """Random parameters and data with every h_a well away from the ReLU kink.

    Logits of order 1 keep every sample's loss away from 0, where the finite difference of
    logsumexp(o_a) - o_a[y] would lose its digits to cancellation.

    Biases are non-zero (they are zero only at initialisation) and, for hidden 1, the one
    unit is active for some samples and inactive for others, so both branches are checked.
    """
    y = np.array([0, 1, 2, 1, 0])
    for seed in range(1000):
        rng = np.random.default_rng([hidden, seed])
        params = Params(
            W1=rng.standard_normal((hidden, 4)),
            b1=rng.normal(0.0, 0.5, hidden),
            W2=rng.standard_normal((3, hidden)) / np.sqrt(hidden),  # logits of order 1
            b2=rng.normal(0.0, 0.5, 3),
        )
        X = rng.standard_normal((N_SAMPLES, 4))
        h_a = X @ params.W1.T + params.b1
        if np.abs(h_a).min() > KINK_MARGIN and (h_a > 0).any() and (h_a < 0).any():
            return params, X, y
    raise AssertionError("no generic case found")  # pragma: no cover


def perturbed_losses(params: Params, X: FloatArray, y: np.ndarray, name: str):
    """Per-sample reference losses as a function of one parameter array."""
    arrays = params.arrays()

    def f(value: FloatArray) -> FloatArray:
        return per_sample_loss_from_logits(logits(**(arrays | {name: value}), X=X), y)

    return f


# -- forward and loss -----------------------------------------------------------------------


def hand_params() -> Params:
    return Params(
        W1=np.array([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0]]),
        b1=np.array([0.5, 0.5]),
        W2=np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]),
        b2=np.array([0.0, 0.0, 0.0]),
    )


def test_forward_computes_the_documented_intermediates() -> None:
    cache = forward(hand_params(), np.array([[1.0, 2.0, 3.0, 4.0]]))
    # h_a = (1*1 + 0.5, -1*2 + 0.5); the ReLU zeroes the second unit
    np.testing.assert_array_equal(cache.h_a, [[1.5, -1.5]])
    np.testing.assert_array_equal(cache.h_s, [[1.5, 0.0]])
    np.testing.assert_array_equal(cache.o_a, [[1.5, 0.0, -1.5]])
    z = math.exp(1.5) + 1.0 + math.exp(-1.5)
    np.testing.assert_allclose(
        cache.o_s, [[math.exp(1.5) / z, 1.0 / z, math.exp(-1.5) / z]], rtol=1e-15
    )


def test_loss_is_the_cross_entropy_of_the_true_class() -> None:
    cache = forward(hand_params(), np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]))
    z = math.exp(1.5) + 1.0 + math.exp(-1.5)
    expected = [math.log(z) - 1.5, math.log(z) + 1.5]  # -log o_s[y] for y = 0, then y = 2
    y = np.array([0, 2])
    np.testing.assert_allclose(loss(cache, y, "none"), expected, rtol=1e-14)
    assert float(loss(cache, y, "sum")) == pytest.approx(sum(expected), rel=1e-14)
    assert float(loss(cache, y, "mean")) == pytest.approx(sum(expected) / 2, rel=1e-14)
    assert float(loss(cache, y)) == float(loss(cache, y, "mean"))  # mean is the default


def test_forward_refuses_inputs_without_four_features() -> None:
    with pytest.raises(ValueError, match="shape"):
        forward(hand_params(), np.zeros((2, 3)))


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [0]])
def test_loss_and_backward_refuse_bad_labels(labels: list[int]) -> None:
    params = hand_params()
    cache = forward(params, np.ones((2, 4)))
    y = np.array(labels)
    with pytest.raises(ValueError, match=r"label|shape"):
        loss(cache, y)
    with pytest.raises(ValueError, match=r"label|shape"):
        backward(params, cache, y)


def test_unknown_reduction_is_refused() -> None:
    params = hand_params()
    cache = forward(params, np.ones((2, 4)))
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="reduction"):
        loss(cache, y, "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        backward(params, cache, y, "max")  # type: ignore[arg-type]


def test_predict_proba_standardises_raw_measurements() -> None:
    standardizer = Standardizer(mean=np.array([1.0, 2.0, 3.0, 4.0]), std=np.full(4, 2.0))
    model = Model(params=hand_params(), standardizer=standardizer)
    raw = np.array([[3.0, 6.0, 9.0, 12.0]])  # standardised: (1, 2, 3, 4)
    expected = forward(hand_params(), np.array([[1.0, 2.0, 3.0, 4.0]])).o_s
    np.testing.assert_allclose(predict_proba(model, raw), expected, rtol=1e-15)


def test_init_params_has_the_documented_shapes_and_zero_biases() -> None:
    params = init_params(7, np.random.default_rng(0))
    assert params.W1.shape == (7, 4)
    assert params.W2.shape == (3, 7)
    assert params.hidden_units == 7
    np.testing.assert_array_equal(params.b1, np.zeros(7))
    np.testing.assert_array_equal(params.b2, np.zeros(3))
    assert all(a.dtype == np.float64 for a in params.arrays().values())


def test_init_params_is_deterministic_per_seed() -> None:
    a = init_params(5, np.random.default_rng(42))
    b = init_params(5, np.random.default_rng(42))
    c = init_params(5, np.random.default_rng(43))
    assert all(np.array_equal(a.arrays()[k], b.arrays()[k]) for k in a.arrays())
    assert not np.array_equal(a.W1, c.W1)


def test_init_params_refuses_zero_hidden_units() -> None:
    with pytest.raises(ValueError, match="hidden_units"):
        init_params(0, np.random.default_rng(0))


# -- stability ------------------------------------------------------------------------------


def test_softmax_is_stable_for_large_logits() -> None:
    o_a = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]])
    o_s = softmax(o_a)
    assert np.isfinite(o_s).all()
    np.testing.assert_array_equal(o_s[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(o_s[1:], np.full((2, 3), 1 / 3), rtol=1e-15)


@pytest.mark.parametrize(("label", "expected"), [(0, 0.0), (1, 1e4), (2, 2e4)])
def test_loss_is_finite_and_exact_for_large_logits(label: int, expected: float) -> None:
    # W2 = 0 makes the logits equal b2, whatever the input
    params = Params(
        W1=np.ones((2, 4)), b1=np.zeros(2), W2=np.zeros((3, 2)), b2=np.array([1e4, 0.0, -1e4])
    )
    cache = forward(params, np.ones((1, 4)))
    np.testing.assert_array_equal(cache.o_a, [[1e4, 0.0, -1e4]])
    value = float(loss(cache, np.array([label])))
    assert math.isfinite(value)
    assert value == pytest.approx(expected, abs=1e-12)


def test_log_softmax_is_finite_where_log_of_softmax_is_not() -> None:
    o_a = np.array([[1e4, 0.0, -1e4]])
    with np.errstate(divide="ignore"):
        naive = np.log(softmax(o_a))
    assert np.isneginf(naive).any()  # the failure log_softmax exists to avoid
    np.testing.assert_array_equal(log_softmax(o_a), [[0.0, -1e4, -2e4]])


def test_backward_is_finite_for_large_logits() -> None:
    params = Params(
        W1=np.ones((2, 4)), b1=np.zeros(2), W2=np.zeros((3, 2)), b2=np.array([1e4, 0.0, -1e4])
    )
    grads = backward(params, forward(params, np.ones((1, 4))), np.array([2]))
    np.testing.assert_array_equal(grads.do_a, [[1.0, 0.0, -1.0]])
    assert all(np.isfinite(a).all() for a in grads.params.arrays().values())


# -- gradients against finite differences ---------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
@pytest.mark.parametrize("name", ["W1", "b1", "W2", "b2"])
def test_backward_matches_central_differences(name: str, hidden: int, reduction: Reduction) -> None:
    params, X, y = generic_case(hidden)
    grads = backward(params, forward(params, X), y, reduction)
    f = perturbed_losses(params, X, y, name)
    # for none: d L_i / d theta for every sample i, from that sample's own loss
    expected = central_difference(lambda value: reduce(f(value), reduction), params.arrays()[name])
    actual = grads.params.arrays()[name]
    assert actual.shape == expected.shape
    if reduction == "none":
        for i in range(N_SAMPLES):
            assert relative_error(actual[i], expected[i]) < TOLERANCE, f"sample {i}"
    else:
        assert relative_error(actual, expected) < TOLERANCE


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
def test_input_gradient_matches_central_differences(hidden: int, reduction: Reduction) -> None:
    params, X, y = generic_case(hidden)
    grads = backward(params, forward(params, X), y, reduction)

    def f(X_: FloatArray) -> FloatArray:
        return per_sample_loss_from_logits(logits(**params.arrays(), X=X_), y)

    assert relative_error(grads.dx, own_rows(f, X, reduction)) < TOLERANCE


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
def test_raw_input_gradient_matches_central_differences(hidden: int, reduction: Reduction) -> None:
    params, X, y = generic_case(hidden)
    standardizer = Standardizer(
        mean=np.array([5.8, 3.0, 3.8, 1.2]), std=np.array([0.8, 0.4, 1.8, 0.75])
    )
    raw = standardizer.inverse(X)
    grads = backward(params, forward(params, standardizer.transform(raw)), y, reduction)

    def f(raw_: FloatArray) -> FloatArray:
        X_ = (raw_ - standardizer.mean) / standardizer.std
        return per_sample_loss_from_logits(logits(**params.arrays(), X=X_), y)

    actual = raw_input_gradient(grads.dx, standardizer)
    assert relative_error(actual, own_rows(f, raw, reduction)) < TOLERANCE


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
def test_intermediate_gradients_match_central_differences(
    hidden: int, reduction: Reduction
) -> None:
    params, X, y = generic_case(hidden)
    cache = forward(params, X)
    grads = backward(params, cache, y, reduction)
    W2, b2 = params.W2, params.b2

    # recompute everything downstream of the perturbed intermediate by hand
    def from_o_a(o_a: FloatArray) -> FloatArray:
        return per_sample_loss_from_logits(o_a, y)

    def from_h_s(h_s: FloatArray) -> FloatArray:
        return per_sample_loss_from_logits(h_s @ W2.T + b2, y)

    def from_h_a(h_a: FloatArray) -> FloatArray:
        return per_sample_loss_from_logits(np.maximum(h_a, 0.0) @ W2.T + b2, y)

    assert relative_error(grads.do_a, own_rows(from_o_a, cache.o_a, reduction)) < TOLERANCE
    assert relative_error(grads.dh_s, own_rows(from_h_s, cache.h_s, reduction)) < TOLERANCE
    assert relative_error(grads.dh_a, own_rows(from_h_a, cache.h_a, reduction)) < TOLERANCE


def test_reference_loss_agrees_with_network_loss() -> None:
    """The finite differences above use the reference; it must be the network's loss."""
    for hidden in HIDDEN_SIZES:
        params, X, y = generic_case(hidden)
        reference = per_sample_loss_from_logits(logits(**params.arrays(), X=X), y)
        np.testing.assert_allclose(
            loss(forward(params, X), y, "none"), reference, rtol=1e-13, atol=1e-14
        )


# -- reductions -----------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", HIDDEN_SIZES)
def test_per_sample_gradients_sum_and_average_to_the_reduced_ones(hidden: int) -> None:
    params, X, y = generic_case(hidden)
    cache = forward(params, X)
    none = backward(params, cache, y, "none")
    total = backward(params, cache, y, "sum")
    mean = backward(params, cache, y, "mean")
    for name, per_sample in none.params.arrays().items():
        assert per_sample.shape == (N_SAMPLES, *params.arrays()[name].shape)
        np.testing.assert_allclose(
            per_sample.sum(axis=0), total.params.arrays()[name], rtol=1e-12, atol=1e-15
        )
        np.testing.assert_allclose(
            per_sample.mean(axis=0), mean.params.arrays()[name], rtol=1e-12, atol=1e-15
        )
    # row-wise gradients: sum and none are each sample's own, mean carries the 1/n
    for field in ("do_a", "dh_s", "dh_a", "dx"):
        np.testing.assert_array_equal(getattr(none, field), getattr(total, field))
        np.testing.assert_allclose(
            getattr(mean, field), getattr(none, field) / N_SAMPLES, rtol=1e-14, atol=1e-17
        )


def test_backward_returns_fresh_arrays() -> None:
    """Mutating a gradient must not write into the forward cache or the parameters."""
    params, X, y = generic_case(3)
    cache = forward(params, X)
    o_s_before = cache.o_s.copy()
    grads = backward(params, cache, y, "none")
    grads.do_a[...] = 7.0
    grads.params.b2[...] = 7.0
    np.testing.assert_array_equal(cache.o_s, o_s_before)


@pytest.mark.parametrize("n", [1, 2, 3, 64, 65, 200])
def test_row_reductions_give_the_same_bits_for_few_rows_and_for_many(n: int) -> None:
    """A few rows are reduced along axis 1, many column by column: the bits must agree."""
    import functools

    from model.network import row_max, row_sum

    rng = np.random.default_rng(n)
    for scale in (1e-300, 1e-3, 1.0, 50.0, 1e300):
        a = rng.standard_normal((n, 3)) * scale
        assert np.array_equal(row_max(a), functools.reduce(np.maximum, a.T)[:, None])
        assert np.array_equal(row_sum(a), functools.reduce(np.add, a.T)[:, None])


@pytest.mark.parametrize("hidden", [1, 3, 16, 64])
def test_predict_one_gives_predict_probas_bits_for_every_row(hidden: int) -> None:
    """The one-row path (Python floats where the operation is element-wise) against
    forward(): random networks, scaled up to saturate the softmax, on rows across the whole
    accepted range (0, 100] cm, decimals as people type them and raw float64s; the bits and
    the sign of every probability must agree."""
    rng = np.random.default_rng(hidden)
    for trial in range(8):
        p = init_params(hidden, rng)
        params = Params(
            W1=p.W1 * rng.uniform(0.1, 30),
            b1=rng.standard_normal(hidden) * rng.uniform(0, 5),
            W2=p.W2 * rng.uniform(0.1, 30),
            b2=rng.standard_normal(3),
        )
        model = Model(params, Standardizer(mean=rng.uniform(0, 8, 4), std=rng.uniform(0.05, 3, 4)))
        raw = rng.uniform(1e-6, 100.0, size=(1500, 4))
        raw[:500] = np.round(raw[:500], 1) + 0.1
        for row in raw:
            expected = predict_proba(model, row[None, :])[0]
            got = np.array(predict_one(model, row.tolist()))
            assert np.array_equal(got, expected), (trial, row, got, expected)
            assert np.array_equal(np.signbit(got), np.signbit(expected))
    integers = [5, 3, 1, 1]  # JSON integers arrive as Python ints
    expected = predict_proba(model, np.array([integers], dtype=np.float64))[0]
    assert predict_one(model, integers) == expected.tolist()


def wide_model(hidden: int, rng: np.random.Generator) -> Model:
    p = init_params(hidden, rng)
    params = Params(W1=p.W1, b1=rng.standard_normal(hidden), W2=p.W2 * 5, b2=rng.standard_normal(3))
    return Model(
        params, Standardizer(mean=np.array([5.8, 3.0, 3.8, 1.2]), std=rng.uniform(0.3, 2, 4))
    )


@pytest.mark.parametrize("blas_threads", [1, None])
@pytest.mark.parametrize("hidden", [4, 16, 64, 256, 1024])
def test_predict_proba_chunked_gives_one_passes_bits(hidden: int, blas_threads: int | None) -> None:
    """Chunks of many rows against one pass over all of them, at the decision grids' sizes
    and odd ones, with one BLAS thread (the server's default) and with the machine's."""
    from threadpoolctl import threadpool_limits

    from model.network import MIN_CHUNK_ROWS, predict_proba_chunked

    rng = np.random.default_rng(hidden)
    model = wide_model(hidden, rng)
    raw = rng.uniform(0.01, 100.0, size=(10_000, 4))
    with threadpool_limits(blas_threads, user_api="blas"):
        for n in (10_000, 9801, 4097, 3 * MIN_CHUNK_ROWS + 7, 2 * MIN_CHUNK_ROWS, 1600, 1):
            expected = predict_proba(model, raw[:n])
            for rows in (None, MIN_CHUNK_ROWS):
                got = predict_proba_chunked(model, raw[:n], rows)
                assert np.array_equal(got, expected), (n, rows)
                assert np.array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("hidden", [1, 16, 1024])
def test_predict_proba_chunked_holds_little_memory_whatever_the_width(
    hidden: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every chunk has at least chunk_rows(H) rows and fewer than twice as many, so its (rows,
    H) temporaries stay near CHUNK_BYTES; NumPy's allocations, traced, show the peak."""
    import tracemalloc

    from model import network

    wide = wide_model(hidden, np.random.default_rng(hidden))
    raw = np.random.default_rng(0).uniform(0.01, 100.0, size=(10_000, 4))
    rows = network.chunk_rows(hidden)
    sizes: list[int] = []
    one_pass = network.predict_proba

    def recording(m: Model, chunk: FloatArray) -> FloatArray:
        sizes.append(chunk.shape[0])
        return one_pass(m, chunk)

    monkeypatch.setattr(network, "predict_proba", recording)
    tracemalloc.start()
    try:
        o_s = network.predict_proba_chunked(wide, raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sizes) == 10_000
    assert all(rows <= size < 2 * rows for size in sizes) or sizes == [10_000]
    # h_a and h_s of the largest chunk, the output and a few (rows, 4) and (rows, 3) arrays
    bound = 2 * 8 * max(sizes) * hidden + 8 * 10_000 * 3 + 8 * 16 * max(sizes)
    assert peak <= bound, (peak, bound, sizes)
    assert 2 * 8 * max(sizes) * hidden <= 2 * max(network.CHUNK_BYTES, 16 * 2048 * hidden)
    if hidden == 1024:  # one pass would hold two (10,000, 1024) arrays: 164 MB
        assert peak < 40 * 2**20, peak
        assert o_s.shape == (10_000, 3)
