"""Properties of model/ that must hold for any input, checked with Hypothesis.

Every test is derandomised (the same examples on every run) and writes no example database.
"""

from __future__ import annotations

import tempfile

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model.network import (
    REDUCTIONS,
    Cache,
    Model,
    Params,
    Reduction,
    Standardizer,
    backward,
    forward,
    loss,
    softmax,
)
from model.persistence import ModelStore

PROPERTY = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
)
BOUNDED = settings(PROPERTY, max_examples=25)

WIDE = 1e300  # logits anywhere in [-WIDE, WIDE]: differences stay finite (< 1.8e308)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
wide_logits = st.integers(1, 8).flatmap(
    lambda n: arrays(np.float64, (n, 3), elements=st.floats(-WIDE, WIDE))
)
reductions = st.sampled_from(REDUCTIONS)


def random_case(seed: int, hidden: int, n: int, scale: float):
    """Generic parameters and data from a seed: no ties, no exact zeros."""
    rng = np.random.default_rng(seed)
    params = Params(
        W1=rng.standard_normal((hidden, 4)) * scale,
        b1=rng.standard_normal(hidden) * scale,
        W2=rng.standard_normal((3, hidden)) * scale,
        b2=rng.standard_normal(3) * scale,
    )
    X = rng.standard_normal((n, 4))
    y = rng.integers(0, 3, n)
    return params, X, y


def cache_of(o_a: np.ndarray) -> Cache:
    n = o_a.shape[0]
    zeros = np.zeros((n, 1))
    return Cache(X=np.zeros((n, 4)), h_a=zeros, h_s=zeros, o_a=o_a, o_s=softmax(o_a))


@PROPERTY
@given(wide_logits)
def test_softmax_rows_are_probabilities(o_a: np.ndarray) -> None:
    o_s = softmax(o_a)
    assert o_s.shape == o_a.shape
    assert np.isfinite(o_s).all()
    assert (o_s >= 0).all()
    assert (o_s <= 1).all()
    np.testing.assert_allclose(o_s.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # the largest logit gets the largest probability
    np.testing.assert_array_equal(o_s.max(axis=1), o_s[np.arange(len(o_a)), o_a.argmax(axis=1)])


@PROPERTY
@given(wide_logits, st.data())
def test_loss_is_finite_and_non_negative(o_a: np.ndarray, data: st.DataObject) -> None:
    n = o_a.shape[0]
    y = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    per_sample = loss(cache_of(o_a), y, "none")
    assert per_sample.shape == (n,)
    assert np.isfinite(per_sample).all()
    assert (per_sample >= 0).all()
    # at least the gap to the best logit, never less
    gap = o_a.max(axis=1) - o_a[np.arange(n), y]
    assert (per_sample >= gap * (1 - 1e-15)).all()
    for reduction in ("mean", "sum"):
        value = loss(cache_of(o_a), y, reduction)
        assert value.shape == ()
        assert np.isfinite(value)
        assert value >= 0


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    hidden=st.integers(1, 12),
    n=st.integers(1, 9),
    reduction=reductions,
)
def test_gradient_shapes_match_the_params(
    seed: int, hidden: int, n: int, reduction: Reduction
) -> None:
    params, X, y = random_case(seed, hidden, n, 1.0)
    cache = forward(params, X)
    grads = backward(params, cache, y, reduction)
    lead = (n,) if reduction == "none" else ()
    for name, value in params.arrays().items():
        gradient = grads.params.arrays()[name]
        assert gradient.shape == lead + value.shape, name
        assert gradient.dtype == np.float64
        assert np.isfinite(gradient).all()
    assert grads.do_a.shape == cache.o_a.shape
    assert grads.dh_s.shape == grads.dh_a.shape == cache.h_a.shape
    assert grads.dx.shape == X.shape


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    hidden=st.integers(1, 12),
    n=st.integers(1, 9),
    scale=st.floats(0.1, 3.0),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_small_step_against_the_gradient_lowers_the_loss(
    seed: int, hidden: int, n: int, scale: float, reduction: Reduction
) -> None:
    params, X, y = random_case(seed, hidden, n, scale)
    cache = forward(params, X)
    before = float(loss(cache, y, reduction))
    grads = backward(params, cache, y, reduction).params
    theta = np.concatenate([a.ravel() for a in params.arrays().values()])
    g = np.concatenate([a.ravel() for a in grads.arrays().values()])
    # a step of one millionth of the parameters' size
    step = 1e-6 * np.linalg.norm(theta) / max(np.linalg.norm(g), 1e-300)
    moved = Params(**{k: v - step * grads.arrays()[k] for k, v in params.arrays().items()})
    after_cache = forward(moved, X)
    # stay on one smooth piece: no ReLU may switch on or off during the step
    assume(np.array_equal(after_cache.h_a > 0, cache.h_a > 0))
    after = float(loss(after_cache, y, reduction))
    expected_decrease = step * float(g @ g)
    rounding = 1e-14 * max(1.0, abs(before))
    if expected_decrease > 100 * rounding:
        assert after < before
    else:  # a (nearly) zero gradient: the loss may not move, but must not rise
        assert after <= before + rounding


@PROPERTY
@given(
    st.integers(2, 20).flatmap(
        lambda n: arrays(np.float64, (n, 4), elements=st.floats(0.01, 100.0))
    )
)
def test_standardizer_inverse_undoes_transform(raw: np.ndarray) -> None:
    standardizer = Standardizer.fit(raw)
    assert (standardizer.std > 0).all()
    X = standardizer.transform(raw)
    np.testing.assert_allclose(standardizer.inverse(X), raw, rtol=1e-12, atol=1e-12)


@PROPERTY
@given(
    mean=arrays(np.float64, 4, elements=st.floats(-1e3, 1e3)),
    std=arrays(np.float64, 4, elements=st.floats(1e-3, 1e3)),
    X=arrays(np.float64, (3, 4), elements=st.floats(-1e3, 1e3)),
)
def test_standardizer_transform_undoes_inverse(
    mean: np.ndarray, std: np.ndarray, X: np.ndarray
) -> None:
    standardizer = Standardizer(mean=mean, std=std)
    np.testing.assert_allclose(
        standardizer.transform(standardizer.inverse(X)), X, rtol=1e-9, atol=1e-6
    )


@st.composite
def models(draw: st.DrawFn) -> Model:
    hidden = draw(st.integers(1, 6))
    positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, width=64)
    return Model(
        params=Params(
            W1=draw(arrays(np.float64, (hidden, 4), elements=finite)),
            b1=draw(arrays(np.float64, hidden, elements=finite)),
            W2=draw(arrays(np.float64, (3, hidden), elements=finite)),
            b2=draw(arrays(np.float64, 3, elements=finite)),
        ),
        standardizer=Standardizer(
            mean=draw(arrays(np.float64, 4, elements=finite)),
            std=draw(arrays(np.float64, 4, elements=positive)),
        ),
    )


@BOUNDED
@given(models())
def test_store_round_trips_any_finite_model_bit_exactly(model: Model) -> None:
    # a fresh directory per example: function-scoped fixtures are shared between examples
    with tempfile.TemporaryDirectory() as directory:
        store = ModelStore(directory)
        loaded = store.load(store.save(model, activate=True)).model
        assert store.load_current().model.params.hidden_units == model.params.hidden_units
    expected = model.params.arrays() | {
        "mean": model.standardizer.mean,
        "std": model.standardizer.std,
    }
    actual = loaded.params.arrays() | {
        "mean": loaded.standardizer.mean,
        "std": loaded.standardizer.std,
    }
    for name, value in expected.items():
        assert actual[name].dtype == np.float64
        assert actual[name].shape == value.shape
        assert actual[name].tobytes() == value.tobytes(), name
