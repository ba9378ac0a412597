"""Mini-batch stochastic gradient descent for the network, with its per-epoch history."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from model.data import CLASSES, FEATURES, Dataset
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
from model.reference import input_reference


@dataclass(frozen=True)
class Interval:
    """The values a hyperparameter may take: ``low`` to ``high``, each end open or closed.

    As scikit-learn's ``Interval`` in its ``_parameter_constraints``: the one statement of a
    bound, from which the checks, the API schema and the command line are all derived.
    """

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        high = "inf" if self.high == math.inf else repr(self.high)
        opening, closing = "(["[not self.low_open], ")]"[not self.high_open]
        return f"{opening}{self.low!r}, {high}{closing}"


def spec(default: Any, allowed: Interval | None, description: str) -> Any:
    """A Hyperparameters field: its default, allowed values and meaning in one place."""
    return field(default=default, metadata={"allowed": allowed, "description": description})


@dataclass(frozen=True)
class Rule:
    """A rule across fields: when ``field`` is ``value``, ``needs`` must lie in ``allowed``."""

    field: str
    value: Any
    needs: str
    allowed: Interval
    message: str


@dataclass(frozen=True)
class Hyperparameters:
    """Training settings; each field's default, range and meaning are stated once, here.

    The service's request schema and ``python -m model train``'s options are derived from
    these fields (:func:`hyperparameter_fields`, :data:`RULES`). The defaults were chosen by
    held-out accuracy over 200 Iris splits (docs/performance.md).
    """

    hidden_units: int = spec(4, Interval(1, 1024), "neurons in the hidden ReLU layer")
    learning_rate: float = spec(
        0.1, Interval(0, 10, low_open=True), "step size eta of theta <- theta - eta * dL/dtheta"
    )
    epochs: int = spec(200, Interval(1, 10_000), "passes over the training data")
    batch_size: int = spec(16, Interval(1, 10_000), "rows per SGD step")
    momentum: float = spec(0.0, Interval(0, 1, high_open=True), "velocity decay (0: plain SGD)")
    weight_decay: float = spec(
        0.005,
        Interval(0, math.inf, high_open=True),
        "L2 coefficient on W1 and W2 (biases are not decayed)",
    )
    validation_fraction: float = spec(
        0.0, Interval(0, 0.5), "share of every species held out for validation (0: none)"
    )
    seed: int = spec(0, Interval(0, 2**63 - 1), "seed of the initial weights and the shuffles")
    early_stopping: bool = spec(
        False, None, "stop when the validation loss stops improving; keep the best epoch"
    )
    patience: int = spec(
        10, Interval(1, 10_000), "epochs without a better validation loss before stopping"
    )

    def __post_init__(self) -> None:
        for item in fields(self):
            value, allowed = getattr(self, item.name), item.metadata["allowed"]
            if item.type == "bool":
                if not isinstance(value, bool):
                    raise HyperparameterError(f"{item.name} must be true or false, got {value!r}")
            elif item.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
                    raise HyperparameterError(
                        f"{item.name} must be an integer in {allowed.low}..{allowed.high}, "
                        f"got {value!r}"
                    )
            elif (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value not in allowed
            ):
                raise HyperparameterError(f"{item.name} must be in {allowed}, got {value!r}")
        for rule in RULES:
            if getattr(self, rule.field) == rule.value and getattr(self, rule.needs) not in (
                rule.allowed
            ):
                raise HyperparameterError(rule.message)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RULES: tuple[Rule, ...] = (
    Rule(
        "early_stopping",
        True,
        "validation_fraction",
        Interval(0, 0.5, low_open=True),
        "early_stopping needs a validation part: set validation_fraction above 0",
    ),
)


def hyperparameter_fields() -> list[tuple[str, type, Any, Interval | None, str]]:
    """(name, type, default, allowed, description) of every hyperparameter, in order."""
    kinds = {"int": int, "float": float, "bool": bool}
    return [
        (f.name, kinds[str(f.type)], f.default, f.metadata["allowed"], f.metadata["description"])
        for f in fields(Hyperparameters)
    ]


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
    reference: dict[str, Any] = field(default_factory=dict)  # model.reference of the rows

    def record(self, hyperparameters: Hyperparameters) -> dict[str, Any]:
        """What model.json keeps of a training run."""
        return {
            "hyperparameters": hyperparameters.to_dict(),
            "metrics": self.metrics,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "history": [asdict(stats) for stats in self.history],
            "input_reference": self.reference,
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
    between_steps: Callable[[], None] | None = None,
) -> TrainResult:
    """Train a new network on ``dataset`` by mini-batch SGD.

    Each step moves theta <- theta - learning_rate * dL/dtheta (with momentum, through a
    velocity v <- momentum * v - learning_rate * dL/dtheta), on batches drawn from a fresh
    permutation every epoch. The standardisation is fitted on the training part only.
    ``on_epoch`` is called after every epoch; when ``should_stop`` returns True training
    raises :class:`TrainingCancelledError`; ``between_steps`` is called after every SGD step
    (it may wait, to give the CPU away; the result is the same). A NaN or infinite loss
    raises :class:`TrainingDivergedError`; a final training loss that is not below the loss
    of the initial parameters raises :class:`TrainingNotImprovedError` (a diverging run must
    not pass for a trained model). The same seed and data give bit-identical weights.
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
                if between_steps is not None:
                    between_steps()
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
    reference = input_reference(dataset.raw, FEATURES)
    return TrainResult(model, history, stopped_early, best_epoch, metrics, reference)


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
