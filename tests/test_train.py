"""Training: the SGD step worked by hand, determinism, accuracy, early stopping and its hooks."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from model.data import Dataset
from model.errors import (
    HyperparameterError,
    TrainingCancelledError,
    TrainingDivergedError,
    TrainingError,
    TrainingNotImprovedError,
)
from model.network import Params, one_hot, predict_proba
from model.train import EpochStats, Hyperparameters, sgd_step, stratified_split, train

# -- one SGD step worked by hand ------------------------------------------------------------

# A tiny net (hidden 2) with hand-chosen weights, and two samples chosen so that unit 1 is
# active for both, unit 2 only for the second: both branches of the ReLU are exercised.
W1 = [[0.1, 0.2, -0.1, 0.3], [-0.2, 0.1, 0.4, -0.3]]
B1 = [0.05, -0.1]
W2 = [[0.5, -0.4], [-0.3, 0.2], [0.1, 0.6]]
B2 = [0.0, 0.1, -0.1]
SAMPLES = [[1.0, 0.0, -1.0, 0.5], [1.0, 1.0, 0.5, -0.5]]
LABELS = [1, 2]


def hand_params() -> Params:
    return Params(W1=np.array(W1), b1=np.array(B1), W2=np.array(W2), b2=np.array(B2))


def hand_gradients(theta, samples, labels):
    """dL/dtheta of the mean cross-entropy, by scalar arithmetic over plain lists.

    ``theta`` is (W1, b1, W2, b2) as nested lists; returns (dW1, db1, dW2, db2) likewise.
    """
    W1, B1, W2, B2 = theta
    n = len(samples)
    dW1 = [[0.0] * 4 for _ in range(2)]
    dB1 = [0.0, 0.0]
    dW2 = [[0.0] * 2 for _ in range(3)]
    dB2 = [0.0, 0.0, 0.0]
    for x, label in zip(samples, labels, strict=True):
        # forward: h_a[j] = sum_f W1[j][f] x[f] + b1[j];  o_a[k] = sum_j W2[k][j] h_s[j] + b2[k]
        h_a = [sum(W1[j][f] * x[f] for f in range(4)) + B1[j] for j in range(2)]
        h_s = [max(a, 0.0) for a in h_a]
        o_a = [W2[k][0] * h_s[0] + W2[k][1] * h_s[1] + B2[k] for k in range(3)]
        top = max(o_a)
        e = [math.exp(a - top) for a in o_a]
        o_s = [v / sum(e) for v in e]
        # backward, the sample's share of the mean: (o_s[k] - [k == y]) / n
        do_a = [(o_s[k] - (1.0 if k == label else 0.0)) / n for k in range(3)]
        dh_s = [sum(do_a[k] * W2[k][j] for k in range(3)) for j in range(2)]
        dh_a = [dh_s[j] * (1.0 if h_a[j] > 0 else 0.0) for j in range(2)]
        for k in range(3):
            dB2[k] += do_a[k]
            for j in range(2):
                dW2[k][j] += do_a[k] * h_s[j]
        for j in range(2):
            dB1[j] += dh_a[j]
            for f in range(4):
                dW1[j][f] += dh_a[j] * x[f]
    return dW1, dB1, dW2, dB2


def minus(theta, step):
    """theta - step, elementwise over nested lists."""
    if isinstance(theta, list):
        return [minus(t, s) for t, s in zip(theta, step, strict=True)]
    return theta - step


def scaled(factor, values):
    if isinstance(values, list):
        return [scaled(factor, v) for v in values]
    return factor * values


def plus(a, b):
    if isinstance(a, list):
        return [plus(x, y) for x, y in zip(a, b, strict=True)]
    return a + b


def zero_velocity(params: Params) -> list[np.ndarray]:
    return [np.zeros_like(a) for a in params.arrays().values()]


def assert_params_close(actual: Params, expected: list) -> None:
    for name, value in zip(("W1", "b1", "W2", "b2"), expected, strict=True):
        np.testing.assert_allclose(
            actual.arrays()[name], value, rtol=1e-13, atol=1e-16, err_msg=name
        )


def test_hand_case_exercises_both_relu_branches() -> None:
    h_a = [[sum(W1[j][f] * x[f] for f in range(4)) + B1[j] for j in range(2)] for x in SAMPLES]
    assert h_a[0][0] > 0
    assert h_a[0][1] < 0
    assert h_a[1][0] > 0
    assert h_a[1][1] > 0


@pytest.mark.parametrize("count", [1, 2])
def test_sgd_step_matches_a_step_worked_by_hand(count: int) -> None:
    samples, labels = SAMPLES[:count], LABELS[:count]
    lr = 0.5
    grads = hand_gradients((W1, B1, W2, B2), samples, labels)
    expected = [
        minus(theta, scaled(lr, g)) for theta, g in zip((W1, B1, W2, B2), grads, strict=True)
    ]
    hp = Hyperparameters(learning_rate=lr, weight_decay=0)
    updated = sgd_step(
        hand_params(),
        zero_velocity(hand_params()),
        np.array(samples),
        one_hot(np.array(labels)),
        hp,
    )
    assert_params_close(updated, expected)


def test_sgd_step_from_a_zero_output_layer_moves_only_the_output_layer() -> None:
    # With W2 = 0 and b2 = 0 every o_s is 1/3, so dL/do_a = (1/3, -2/3, 1/3) for y = 1 and
    # dL/dh_s = dL/do_a W2 = 0: the first layer cannot move. h_s = relu(W1 x + b1) = (1, 0).
    params = Params(
        W1=np.array([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]),
        b1=np.zeros(2),
        W2=np.zeros((3, 2)),
        b2=np.zeros(3),
    )
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    updated = sgd_step(
        params,
        zero_velocity(params),
        x,
        one_hot(np.array([1])),
        Hyperparameters(learning_rate=0.3, weight_decay=0),
    )
    np.testing.assert_array_equal(updated.W1, params.W1)
    np.testing.assert_array_equal(updated.b1, params.b1)
    np.testing.assert_allclose(updated.b2, [-0.1, 0.2, -0.1], rtol=1e-15)
    np.testing.assert_allclose(updated.W2, [[-0.1, 0.0], [0.2, 0.0], [-0.1, 0.0]], rtol=1e-15)


def test_sgd_step_with_momentum_follows_the_velocity_formula() -> None:
    # v <- momentum * v - lr * g;  theta <- theta + v, two steps on the same batch
    lr, momentum = 0.5, 0.9
    hp = Hyperparameters(learning_rate=lr, momentum=momentum, weight_decay=0)
    velocity = zero_velocity(hand_params())
    X, y = np.array(SAMPLES), one_hot(np.array(LABELS))

    theta0 = [W1, B1, W2, B2]
    v1 = [scaled(-lr, g) for g in hand_gradients(theta0, SAMPLES, LABELS)]
    theta1 = [plus(t, v) for t, v in zip(theta0, v1, strict=True)]
    g1 = hand_gradients(theta1, SAMPLES, LABELS)
    v2 = [plus(scaled(momentum, v), scaled(-lr, g)) for v, g in zip(v1, g1, strict=True)]
    theta2 = [plus(t, v) for t, v in zip(theta1, v2, strict=True)]

    step1 = sgd_step(hand_params(), velocity, X, y, hp)
    assert_params_close(step1, theta1)
    for actual, expected in zip(velocity, v1, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-16)
    step2 = sgd_step(step1, velocity, X, y, hp)
    assert_params_close(step2, theta2)
    for actual, expected in zip(velocity, v2, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-16)


def test_sgd_step_with_weight_decay_shrinks_weights_but_not_biases() -> None:
    # g_W <- g_W + weight_decay * W for W1 and W2; biases take the plain gradient
    lr, decay = 0.5, 0.25
    dW1, dB1, dW2, dB2 = hand_gradients((W1, B1, W2, B2), SAMPLES, LABELS)
    expected = [
        minus(W1, scaled(lr, plus(dW1, scaled(decay, W1)))),
        minus(B1, scaled(lr, dB1)),
        minus(W2, scaled(lr, plus(dW2, scaled(decay, W2)))),
        minus(B2, scaled(lr, dB2)),
    ]
    hp = Hyperparameters(learning_rate=lr, weight_decay=decay)
    updated = sgd_step(
        hand_params(),
        zero_velocity(hand_params()),
        np.array(SAMPLES),
        one_hot(np.array(LABELS)),
        hp,
    )
    assert_params_close(updated, expected)


def test_sgd_step_does_not_modify_its_input_params() -> None:
    params = hand_params()
    sgd_step(
        params,
        zero_velocity(params),
        np.array(SAMPLES),
        one_hot(np.array(LABELS)),
        Hyperparameters(),
    )
    for name, value in zip(("W1", "b1", "W2", "b2"), (W1, B1, W2, B2), strict=True):
        np.testing.assert_array_equal(params.arrays()[name], value)


# -- determinism and quality ----------------------------------------------------------------


def all_arrays(result) -> dict[str, np.ndarray]:
    model = result.model
    return model.params.arrays() | {"mean": model.standardizer.mean, "std": model.standardizer.std}


def test_same_seed_and_data_give_bitwise_identical_weights(iris: Dataset) -> None:
    hp = Hyperparameters(epochs=30, validation_fraction=0.2, momentum=0.5, seed=11)
    first, second = all_arrays(train(iris, hp)), all_arrays(train(iris, hp))
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_different_seeds_give_different_weights(iris: Dataset) -> None:
    first = all_arrays(train(iris, Hyperparameters(epochs=30, seed=1)))
    second = all_arrays(train(iris, Hyperparameters(epochs=30, seed=2)))
    for name in ("W1", "W2"):
        assert not np.array_equal(first[name], second[name]), name


def split_80_20(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified: 20 % of each species held out, drawn independently of model.train."""
    rng = np.random.default_rng(seed)
    held = np.concatenate(
        [rng.permutation(np.flatnonzero(y == k))[: (y == k).sum() // 5] for k in range(3)]
    )
    train_index = np.setdiff1d(np.arange(y.shape[0]), held)
    return train_index, held


def test_training_reaches_90_percent_holdout_accuracy(iris: Dataset) -> None:
    accuracies = []
    for seed in range(5):
        train_index, held = split_80_20(iris.y, seed)
        assert held.size == 30
        assert np.bincount(iris.y[held]).tolist() == [10, 10, 10]
        model = train(iris.subset(train_index), Hyperparameters()).model
        predicted = predict_proba(model, iris.raw[held]).argmax(axis=1)
        accuracies.append(float((predicted == iris.y[held]).mean()))
    assert np.mean(accuracies) >= 0.9, accuracies


# -- history, validation and early stopping -------------------------------------------------


def test_history_has_one_entry_per_epoch(iris: Dataset) -> None:
    result = train(iris, Hyperparameters(epochs=7))
    assert [s.epoch for s in result.history] == list(range(1, 8))
    assert all(s.epochs == 7 for s in result.history)
    assert all(s.validation_loss is None and s.validation_accuracy is None for s in result.history)
    assert all(math.isfinite(s.train_loss) and 0 <= s.train_accuracy <= 1 for s in result.history)
    assert not result.stopped_early
    assert result.best_epoch == 7
    assert set(result.metrics) == {
        "train_loss",
        "train_accuracy",
        "train_rows",
        "initial_train_loss",
    }
    assert result.metrics["train_rows"] == 150


def test_validation_fraction_adds_validation_figures(iris: Dataset) -> None:
    result = train(iris, Hyperparameters(epochs=5, validation_fraction=0.2))
    assert len(result.history) == 5
    for stats in result.history:
        assert stats.validation_loss is not None
        assert math.isfinite(stats.validation_loss)
        assert stats.validation_accuracy is not None
        assert 0 <= stats.validation_accuracy <= 1
    assert result.metrics["train_rows"] == 120
    assert result.metrics["validation_rows"] == 30
    assert result.metrics["validation_loss"] == result.history[-1].validation_loss


def test_early_stopping_returns_the_best_params(iris: Dataset) -> None:
    hp = Hyperparameters(
        epochs=2000, learning_rate=0.5, validation_fraction=0.2, early_stopping=True, patience=5
    )
    result = train(iris, hp)
    losses = [s.validation_loss for s in result.history]
    assert result.stopped_early
    best = int(np.argmin(losses)) + 1  # first epoch with the lowest validation loss
    assert result.best_epoch == best
    assert len(result.history) == best + hp.patience  # waited exactly `patience` epochs
    assert losses[-1] > losses[best - 1]  # so returning the last params would show
    # the final metrics are computed from the returned params
    assert result.metrics["validation_loss"] == losses[best - 1]
    assert result.metrics["validation_accuracy"] == result.history[best - 1].validation_accuracy


def test_stratified_split_holds_out_the_fraction_of_every_species(iris: Dataset) -> None:
    train_index, held = stratified_split(iris.y, 0.2, np.random.default_rng(0))
    assert np.bincount(iris.y[held], minlength=3).tolist() == [10, 10, 10]
    assert np.bincount(iris.y[train_index], minlength=3).tolist() == [40, 40, 40]
    assert np.intersect1d(train_index, held).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_index, held])), np.arange(150))


def test_stratified_split_of_unbalanced_classes() -> None:
    y = np.array([0] * 5 + [1] * 20 + [2] * 10)
    train_index, held = stratified_split(y, 0.2, np.random.default_rng(0))
    assert np.bincount(y[held], minlength=3).tolist() == [1, 4, 2]
    assert np.bincount(y[train_index], minlength=3).tolist() == [4, 16, 8]


def test_training_validation_part_is_stratified(iris: Dataset) -> None:
    unbalanced = iris.subset(
        np.concatenate([np.arange(0, 10), np.arange(50, 100), np.arange(100, 120)])
    )
    result = train(unbalanced, Hyperparameters(epochs=2, validation_fraction=0.2))
    assert result.metrics["validation_rows"] == 2 + 10 + 4
    assert result.metrics["train_rows"] == 8 + 40 + 16


def test_on_epoch_is_called_after_every_epoch(iris: Dataset) -> None:
    seen: list[EpochStats] = []
    result = train(iris, Hyperparameters(epochs=6, validation_fraction=0.2), on_epoch=seen.append)
    assert seen == result.history
    assert [s.epoch for s in seen] == [1, 2, 3, 4, 5, 6]


def test_between_steps_is_called_after_every_step_and_changes_nothing(iris: Dataset) -> None:
    """120 training rows (a fifth held out) in batches of 16: 8 steps an epoch, the last of
    8 rows; the weights are those of a run without the hook, to the bit."""
    hp = Hyperparameters(epochs=5, validation_fraction=0.2, batch_size=16, seed=3)
    steps: list[int] = []
    epochs: list[int] = []
    hooked = train(
        iris,
        hp,
        on_epoch=lambda stats: epochs.append(len(steps)),
        between_steps=lambda: steps.append(1),
    )
    assert epochs == [8, 16, 24, 32, 40]
    plain = all_arrays(train(iris, hp))
    for name, array in all_arrays(hooked).items():
        assert np.array_equal(array, plain[name]), name


def test_should_stop_cancels_training(iris: Dataset) -> None:
    seen: list[EpochStats] = []
    with pytest.raises(TrainingCancelledError) as raised:
        train(
            iris,
            Hyperparameters(epochs=50),
            on_epoch=seen.append,
            should_stop=lambda: len(seen) >= 3,
        )
    assert raised.value.epoch == 3
    assert len(seen) == 3


@pytest.mark.parametrize("validation_fraction", [0.0, 0.2])
@pytest.mark.parametrize("hidden_units", [4, 1024])
def test_huge_learning_rate_raises_training_diverged(
    iris: Dataset, hidden_units: int, validation_fraction: float
) -> None:
    # learning_rate 10 (the top of its range) with weight_decay 1 multiplies W1 and W2 by
    # 1 - 10 * 1 = -9 on every step, whatever the data: the weights overflow within a few
    # hundred steps for any seed. No NumPy warning may escape on the way (filterwarnings =
    # error turns an overflow RuntimeWarning into a failure of this test).
    hp = Hyperparameters(
        learning_rate=10,
        weight_decay=1.0,
        hidden_units=hidden_units,
        validation_fraction=validation_fraction,
        epochs=500,
    )
    seen: list[EpochStats] = []
    with pytest.raises(TrainingDivergedError) as raised:
        train(iris, hp, on_epoch=seen.append)
    assert not math.isfinite(raised.value.loss)
    assert raised.value.epoch == len(seen) + 1  # the diverged epoch is not reported as done
    assert all(math.isfinite(s.train_loss) for s in seen)
    assert "learning_rate" in str(raised.value)


# -- hyperparameters ------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("hidden_units", 0),
    ("hidden_units", 1025),
    ("epochs", 0),
    ("epochs", 10_001),
    ("learning_rate", 0.0),
    ("learning_rate", -0.1),
    ("learning_rate", 10.5),
    ("learning_rate", math.nan),
    ("learning_rate", math.inf),
    ("batch_size", 0),
    ("batch_size", 10_001),
    ("momentum", -0.1),
    ("momentum", 1.0),
    ("momentum", math.nan),
    ("weight_decay", -0.1),
    ("weight_decay", math.inf),
    ("weight_decay", math.nan),
    ("validation_fraction", -0.1),
    ("validation_fraction", 0.51),
    ("validation_fraction", math.nan),
    ("seed", -1),
    ("seed", 2**63),
    ("patience", 0),
    ("patience", 10_001),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
def test_out_of_range_hyperparameter_is_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(HyperparameterError, match=field):
        Hyperparameters(**{field: value})


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_units", 2.5), ("epochs", 2.5), ("batch_size", 2.5), ("patience", 2.5), ("seed", 0.5)],
)
def test_non_integer_count_hyperparameter_is_refused_by_name(field: str, value: float) -> None:
    # the messages promise "an integer in ..."; a float would fail later with a TypeError
    with pytest.raises(HyperparameterError, match=field):
        Hyperparameters(**{field: value})


@pytest.mark.parametrize(
    "ends",
    [
        {
            "hidden_units": 1,
            "epochs": 1,
            "batch_size": 1,
            "patience": 1,
            "seed": 0,
            "learning_rate": 5e-324,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "validation_fraction": 0.0,
        },
        {
            "hidden_units": 1024,
            "epochs": 10_000,
            "batch_size": 10_000,
            "patience": 10_000,
            "seed": 2**63 - 1,
            "learning_rate": 10.0,
            "momentum": 0.9999999999999999,
            "weight_decay": 1e300,
            "validation_fraction": 0.5,
            "early_stopping": True,
        },
    ],
)
def test_hyperparameter_range_ends_are_accepted(ends: dict[str, Any]) -> None:
    hp = Hyperparameters(**ends)
    assert {name: getattr(hp, name) for name in ends} == ends


def test_early_stopping_without_validation_fraction_is_refused() -> None:
    with pytest.raises(HyperparameterError, match="validation_fraction"):
        Hyperparameters(early_stopping=True)


def test_hyperparameters_are_frozen_and_serialisable() -> None:
    hp = Hyperparameters(hidden_units=8)
    assert hp.to_dict()["hidden_units"] == 8
    assert Hyperparameters(**hp.to_dict()) == hp
    assert replace(hp, seed=5).seed == 5
    with pytest.raises(AttributeError):
        hp.seed = 3  # type: ignore[misc]


def test_a_run_whose_loss_ends_above_where_it_started_fails_not_improved(iris: Dataset) -> None:
    # Learning rate 10 with momentum 0.9999 overshoots and never comes back, while every
    # loss stays finite (so it is not TrainingDivergedError).
    with pytest.raises(TrainingNotImprovedError, match="not below the initial loss") as caught:
        train(iris, Hyperparameters(learning_rate=10, momentum=0.9999, epochs=50))
    assert caught.value.final_loss >= caught.value.initial_loss
    assert isinstance(caught.value, TrainingError)


def test_metrics_record_the_initial_loss_above_the_final_one(iris: Dataset) -> None:
    result = train(iris, Hyperparameters(epochs=20))
    initial = result.metrics["initial_train_loss"]
    assert initial > result.metrics["train_loss"]
    assert initial == pytest.approx(math.log(3), abs=0.3)  # small random weights: near uniform
