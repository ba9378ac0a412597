"""Mini-batch stochastic gradient descent for the network, with its per-epoch history."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from model.data import CLASSES, Dataset
from model.errors import (
    HyperparameterError,
    TrainingCancelledError,
    TrainingDivergedError,
    TrainingNotImprovedError,
)
from model.network import (
    IntArray,
    Model,
    Params,
    Standardizer,
    check_labels,
    forward,
    init_params,
    loss,
    mean_gradients,
    one_hot,
)


@dataclass(frozen=True)
class Hyperparameters:
    """Training settings. The defaults were chosen by held-out accuracy over 200 Iris splits.

    ``weight_decay`` is the L2 coefficient on W1 and W2 (biases are not decayed).
    ``patience`` is the number of epochs without a better validation loss that early
    stopping waits; the best parameters seen are the ones returned.
    """

    hidden_units: int = 4
    learning_rate: float = 0.1
    epochs: int = 200
    batch_size: int = 16
    momentum: float = 0.0
    weight_decay: float = 0.005
    validation_fraction: float = 0.0
    seed: int = 0
    early_stopping: bool = False
    patience: int = 10

    def __post_init__(self) -> None:
        counts = [
            ("hidden_units", 1, 1024),
            ("epochs", 1, 10_000),
            ("batch_size", 1, 10_000),
            ("seed", 0, 2**63 - 1),
            ("patience", 1, 10_000),
        ]
        for name, low, high in counts:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise HyperparameterError(
                    f"{name} must be an integer in {low}..{high}, got {value!r}"
                )
        rates = [
            ("learning_rate", 0 < self.learning_rate <= 10, "in (0, 10]"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", 0 <= self.weight_decay < math.inf, "finite and >= 0"),
            ("validation_fraction", 0 <= self.validation_fraction <= 0.5, "in [0, 0.5]"),
        ]
        for name, ok, rule in rates:
            if not ok:
                raise HyperparameterError(f"{name} must be {rule}, got {getattr(self, name)!r}")
        if self.early_stopping and self.validation_fraction == 0:
            raise HyperparameterError(
                "early_stopping needs a validation part: set validation_fraction above 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochStats:
    """Loss and accuracy after one epoch; validation figures are None without a validation part."""

    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    validation_loss: float | None = None
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class TrainResult:
    model: Model
    history: list[EpochStats]
    stopped_early: bool = False
    best_epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def record(self, hyperparameters: Hyperparameters) -> dict[str, Any]:
        """What model.json keeps of a training run."""
        return {
            "hyperparameters": hyperparameters.to_dict(),
            "metrics": self.metrics,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "history": [asdict(stats) for stats in self.history],
        }


def stratified_split(
    y: IntArray, fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Indices (train, held out) with ``fraction`` of every class held out (at least one each)."""
    train: list[IntArray] = []
    held: list[IntArray] = []
    for k in range(len(CLASSES)):
        members = rng.permutation(np.flatnonzero(y == k))
        cut = max(1, round(fraction * members.size)) if members.size > 1 else 0
        held.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def evaluate(model: Model, dataset: Dataset) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset``."""
    cache = forward(model.params, model.standardizer.transform(dataset.raw))
    accuracy = float((cache.o_s.argmax(axis=1) == dataset.y).mean())
    return float(loss(cache, dataset.y)), accuracy


def train(
    dataset: Dataset,
    hyperparameters: Hyperparameters | None = None,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a new network on ``dataset`` by mini-batch SGD.

    Each step moves theta <- theta - learning_rate * dL/dtheta (with momentum, through a
    velocity v <- momentum * v - learning_rate * dL/dtheta), on batches drawn from a fresh
    permutation every epoch. The standardisation is fitted on the training part only.
    ``on_epoch`` is called after every epoch; when ``should_stop`` returns True training
    raises :class:`TrainingCancelledError`. A NaN or infinite loss raises
    :class:`TrainingDivergedError`; a final training loss that is not below the loss of the
    initial parameters raises :class:`TrainingNotImprovedError` (a diverging run must not
    pass for a trained model). The same seed and data give bit-identical weights.
    """
    hp = hyperparameters or Hyperparameters()
    rng = np.random.default_rng(hp.seed)
    if hp.validation_fraction > 0:
        train_index, held_index = stratified_split(dataset.y, hp.validation_fraction, rng)
        train_set, validation = dataset.subset(train_index), dataset.subset(held_index)
    else:
        train_set, validation = dataset, None

    standardizer = Standardizer.fit(train_set.raw)
    X = standardizer.transform(train_set.raw)
    y = train_set.y
    n = len(train_set)
    check_labels(y, n)
    Y = one_hot(y)
    params = init_params(hp.hidden_units, rng)
    initial_loss = float(loss(forward(params, X), y))
    velocity = [np.zeros_like(p) for p in params.arrays().values()]
    history: list[EpochStats] = []
    best: tuple[float, Params, int] | None = None

    for epoch in range(1, hp.epochs + 1):
        order = rng.permutation(n)
        # A diverging run overflows on its way to inf/NaN; that is reported below as
        # TrainingDivergedError rather than as floating-point warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            # One gather per epoch; each batch is then a view of the shuffled rows.
            X_epoch, Y_epoch = X[order], Y[order]
            for start in range(0, n, hp.batch_size):
                stop = start + hp.batch_size
                params = sgd_step(params, velocity, X_epoch[start:stop], Y_epoch[start:stop], hp)
            model = Model(params=params, standardizer=standardizer)
            cache = forward(params, X)  # X is standardised already
            train_loss = float(loss(cache, y))
            train_accuracy = float((cache.o_s.argmax(axis=1) == y).mean())
            val_loss, val_accuracy = evaluate(model, validation) if validation else (None, None)
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(epoch, train_loss)
        stats = EpochStats(epoch, hp.epochs, train_loss, train_accuracy, val_loss, val_accuracy)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if should_stop is not None and should_stop():
            raise TrainingCancelledError(epoch)
        if hp.early_stopping and val_loss is not None:
            if best is None or val_loss < best[0]:
                best = (val_loss, params, epoch)
            elif epoch - best[2] >= hp.patience:
                break

    stopped_early = best is not None and history[-1].epoch < hp.epochs
    if best is not None:
        params = best[1]
    model = Model(params=params, standardizer=standardizer)
    best_epoch = best[2] if best is not None else history[-1].epoch
    metrics = final_metrics(model, train_set, validation) | {"initial_train_loss": initial_loss}
    if not metrics["train_loss"] < initial_loss:
        raise TrainingNotImprovedError(initial_loss, metrics["train_loss"])
    return TrainResult(model, history, stopped_early, best_epoch, metrics)


def sgd_step(
    params: Params,
    velocity: list[np.ndarray[Any, Any]],
    X: np.ndarray[Any, Any],
    Y: np.ndarray[Any, Any],
    hp: Hyperparameters,
) -> Params:
    """One step on a batch (one-hot targets Y); ``velocity`` is updated in place."""
    g = mean_gradients(params, forward(params, X), Y)
    lr, decay = hp.learning_rate, hp.weight_decay
    if decay:  # d/dtheta of (weight_decay / 2) * ||W||^2, on the weights only
        g = Params(W1=g.W1 + decay * params.W1, b1=g.b1, W2=g.W2 + decay * params.W2, b2=g.b2)
    if not hp.momentum:
        return Params(
            W1=params.W1 - lr * g.W1,
            b1=params.b1 - lr * g.b1,
            W2=params.W2 - lr * g.W2,
            b2=params.b2 - lr * g.b2,
        )
    for v, grad in zip(velocity, (g.W1, g.b1, g.W2, g.b2), strict=True):
        v *= hp.momentum
        v -= lr * grad
    return Params(*(theta + v for theta, v in zip(params.arrays().values(), velocity, strict=True)))


def final_metrics(model: Model, train_set: Dataset, validation: Dataset | None) -> dict[str, Any]:
    train_loss, train_accuracy = evaluate(model, train_set)
    metrics: dict[str, Any] = {
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "train_rows": len(train_set),
    }
    if validation is not None:
        val_loss, val_accuracy = evaluate(model, validation)
        metrics |= {
            "validation_loss": val_loss,
            "validation_accuracy": val_accuracy,
            "validation_rows": len(validation),
        }
    return metrics
