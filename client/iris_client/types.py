"""What the client returns: frozen dataclasses read from the API's JSON, never raw dicts."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, overload

from iris_client.errors import InputError, ProtocolError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float64]

# The API's contract: measurement names in column order, and class names in index order.
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
CLASSES = ("setosa", "versicolor", "virginica")
ENDED = frozenset({"succeeded", "failed", "cancelled"})
JOB_ID = re.compile(r"[0-9a-f]{32}")  # fullmatch: "$" would let a newline through

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Reduction = Literal["mean", "sum", "none"]
Include = Literal["activations", "intermediates", "input"]
T = TypeVar("T")


class Hyperparameters(TypedDict, total=False):
    """``POST /train`` hyperparameters; a key left out takes the server's default."""

    hidden_units: int
    learning_rate: float
    epochs: int
    batch_size: int
    momentum: float
    weight_decay: float
    validation_fraction: float
    seed: int
    early_stopping: bool
    patience: int


def _get(data: Mapping[str, Any], key: str, kind: type[T], what: str) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ProtocolError(f"{what}: {key!r} is {value!r:.60}, expected {kind.__name__}")
    return value


def _opt(data: Mapping[str, Any], key: str, kind: type[T], what: str) -> T | None:
    return None if data.get(key) is None else _get(data, key, kind, what)


def _number(data: Mapping[str, Any], key: str, what: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{what}: {key!r} is {value!r:.60}, expected a number")
    return float(value)


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Limits:
    """The server's request limits (``GET /limits``); ``published`` is False for fallbacks."""

    max_instances: int
    max_body_bytes: int
    max_train_rows: int
    published: bool = True

    @classmethod
    def from_json(cls, data: Any) -> Limits:
        d = _object(data, "limits")
        found = cls(
            max_instances=_get(d, "max_instances", int, "limits"),
            max_body_bytes=_get(d, "max_body_bytes", int, "limits"),
            max_train_rows=_get(d, "max_train_rows", int, "limits"),
        )
        if min(found.max_instances, found.max_body_bytes, found.max_train_rows) < 1:
            raise ProtocolError(f"limits: a limit below 1 in {found}")
        return found


# The documented defaults (README, configuration), used when a server publishes no limits.
DEFAULT_LIMITS = Limits(
    max_instances=10_000, max_body_bytes=16 * 2**20, max_train_rows=100_000, published=False
)


@dataclass(frozen=True)
class Prediction:
    """One flower: the most probable species, its index, and every class's probability."""

    label: str
    class_index: int
    probabilities: Mapping[str, float]

    @classmethod
    def from_json(cls, data: Any) -> Prediction:
        d = _object(data, "prediction")
        probabilities = _object(d.get("probabilities"), "prediction probabilities")
        return cls(
            label=_get(d, "label", str, "prediction"),
            class_index=_get(d, "class_index", int, "prediction"),
            probabilities={name: float(probabilities[name]) for name in CLASSES},
        )


@dataclass(frozen=True)
class Predictions(Sequence[Prediction]):
    """Predictions in input order, all from one model version (a split input is pinned)."""

    model_version: str
    predictions: tuple[Prediction, ...]

    @overload
    def __getitem__(self, index: int) -> Prediction: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Prediction]: ...
    def __getitem__(self, index: int | slice) -> Prediction | Sequence[Prediction]:
        return self.predictions[index]

    def __len__(self) -> int:
        return len(self.predictions)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.predictions)

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.predictions]

    @classmethod
    def from_json(cls, data: Any) -> Predictions:
        d = _object(data, "predict answer")
        rows = d.get("predictions")
        if not isinstance(rows, list):
            raise ProtocolError("predict answer: 'predictions' is not a list")
        try:
            # the hot loop of a large input: read fields directly, check them in one pass
            predictions = tuple(
                Prediction(row["label"], row["class_index"], row["probabilities"]) for row in rows
            )
        except KeyError as error:
            raise ProtocolError(f"predict answer: a prediction lacks {error}") from None
        except TypeError:
            raise ProtocolError("predict answer: a prediction is not an object") from None
        for i, p in enumerate(predictions):
            if not _well_formed(p):
                raise ProtocolError(
                    f"predict answer: prediction {i} is not a class of {', '.join(CLASSES)} "
                    "with its index and the three probabilities"
                )
        return cls(
            model_version=_get(d, "model_version", str, "predict answer"), predictions=predictions
        )


_INDEX = {name: i for i, name in enumerate(CLASSES)}
_NUMBERS = frozenset({float, int})


def _well_formed(p: Prediction) -> bool:
    """The label is a class, ``class_index`` its index, every class has a number."""
    probabilities = p.probabilities
    return (
        type(p.label) is str
        and type(p.class_index) is int
        and _INDEX.get(p.label) == p.class_index
        and type(probabilities) is dict
        and all(type(probabilities.get(name)) in _NUMBERS for name in CLASSES)
    )


def _array(value: Any, what: str) -> FloatArray:
    try:
        import numpy as np
    except ImportError:
        raise InputError(
            "gradients come as NumPy arrays: pip install 'iris-client[numpy]'"
        ) from None

    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ProtocolError(f"gradients answer: {what} is not numeric: {error}") from None


def _arrays(data: Any, names: Sequence[str], what: str) -> dict[str, FloatArray]:
    d = _object(data, what)
    missing = [name for name in names if name not in d]
    if missing:
        raise ProtocolError(f"{what}: missing {', '.join(missing)}")
    return {name: _array(d[name], f"{what}.{name}") for name in names}


@dataclass(frozen=True)
class ParamGradients:
    """dL/dW1 (H, 4), dL/db1 (H,), dL/dW2 (3, H), dL/db2 (3,); a leading n for ``none``."""

    W1: FloatArray
    b1: FloatArray
    W2: FloatArray
    b2: FloatArray


@dataclass(frozen=True)
class Activations:
    """Forward values: standardised input x, hidden h_a/h_s, logits o_a, softmax o_s."""

    x: FloatArray
    h_a: FloatArray
    h_s: FloatArray
    o_a: FloatArray
    o_s: FloatArray


@dataclass(frozen=True)
class Intermediates:
    """dL/do_a, dL/dh_s, dL/dh_a, per sample."""

    do_a: FloatArray
    dh_s: FloatArray
    dh_a: FloatArray


@dataclass(frozen=True)
class InputGradients:
    """dL/dx of the standardised input, and dL/d(raw measurement in cm)."""

    x: FloatArray
    measurements: FloatArray


@dataclass(frozen=True)
class Gradients:
    """The ``POST /gradients`` answer, arrays as float64 NumPy arrays."""

    model_version: str
    reduction: Reduction
    loss: float | FloatArray
    gradients: ParamGradients
    activations: Activations | None = None
    intermediates: Intermediates | None = None
    input_gradients: InputGradients | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Gradients:
        d = _object(data, "gradients answer")
        reduction = _get(d, "reduction", str, "gradients answer")
        if reduction not in ("mean", "sum", "none"):
            raise ProtocolError(f"gradients answer: unknown reduction {reduction!r:.60}")
        raw_loss = d.get("loss")
        loss: float | FloatArray
        if isinstance(raw_loss, list):
            loss = _array(raw_loss, "loss")
        else:
            number = _number(d, "loss", "gradients answer")
            if number is None:
                raise ProtocolError("gradients answer: no 'loss'")
            loss = number

        def part(key: str, kind: type[Any], names: Sequence[str]) -> Any:
            if d.get(key) is None:
                return None
            return kind(**_arrays(d[key], names, key))

        return cls(
            model_version=_get(d, "model_version", str, "gradients answer"),
            reduction=reduction,  # type: ignore[arg-type]  # checked just above
            loss=loss,
            gradients=ParamGradients(
                **_arrays(d.get("gradients"), ("W1", "b1", "W2", "b2"), "gradients")
            ),
            activations=part("activations", Activations, ("x", "h_a", "h_s", "o_a", "o_s")),
            intermediates=part("intermediates", Intermediates, ("do_a", "dh_s", "dh_a")),
            input_gradients=part("input_gradients", InputGradients, ("x", "measurements")),
            raw=d,
        )

    def shaped_for(self, rows: int) -> Gradients:
        """This answer, checked to have the shapes that ``rows`` rows give; else ProtocolError.

        H, the hidden units, is read from ``b1``; a leading n for ``reduction="none"``.
        """
        g = self.gradients
        hidden = g.b1.shape[-1] if g.b1.ndim else 0
        lead = (rows,) if self.reduction == "none" else ()
        found: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = [
            ("gradients.W1", g.W1.shape, (*lead, hidden, 4)),
            ("gradients.b1", g.b1.shape, (*lead, hidden)),
            ("gradients.W2", g.W2.shape, (*lead, 3, hidden)),
            ("gradients.b2", g.b2.shape, (*lead, 3)),
            ("loss", getattr(self.loss, "shape", ()), lead),
        ]
        per_row = {"x": 4, "h_a": hidden, "h_s": hidden, "o_a": 3, "o_s": 3}
        per_row |= {"do_a": 3, "dh_s": hidden, "dh_a": hidden, "measurements": 4}
        for part in ("activations", "intermediates", "input_gradients"):
            arrays = getattr(self, part)
            if arrays is not None:
                found += [
                    (f"{part}.{name}", value.shape, (rows, per_row[name]))
                    for name, value in vars(arrays).items()
                ]
        for name, shape, expected in found:
            if shape != expected or hidden < 1:
                raise ProtocolError(
                    f"gradients answer: {name} has shape {shape}, not {expected} "
                    f"for {rows} rows and {hidden} hidden units"
                )
        return self


@dataclass(frozen=True)
class Progress:
    """A job's latest epoch, and the losses and accuracies of that epoch (None before any)."""

    epoch: int
    epochs: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> Progress:
        d = _object(data, "job progress")
        return cls(
            epoch=_get(d, "epoch", int, "job progress"),
            epochs=_get(d, "epochs", int, "job progress"),
            train_loss=_number(d, "train_loss", "job progress"),
            train_accuracy=_number(d, "train_accuracy", "job progress"),
            validation_loss=_number(d, "validation_loss", "job progress"),
            validation_accuracy=_number(d, "validation_accuracy", "job progress"),
        )


@dataclass(frozen=True)
class Job:
    """A training job as ``GET /train/{id}`` shows it."""

    job_id: str
    status: JobStatus
    created_at: str
    progress: Progress
    hyperparameters: Mapping[str, Any]
    dataset: Mapping[str, Any]
    activate: bool
    started_at: str | None = None
    finished_at: str | None = None
    min_validation_accuracy: float | None = None
    metrics: Mapping[str, Any] | None = None
    model_version: str | None = None
    activated: bool = False
    error: str | None = None
    note: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def held_back(self) -> bool:
        """Succeeded and activation was asked, but the version was not made current."""
        return self.status == "succeeded" and self.activate and not self.activated

    @property
    def ok(self) -> bool:
        """Succeeded, and activated if activation was asked."""
        return self.status == "succeeded" and not self.held_back

    @classmethod
    def from_json(cls, data: Any) -> Job:
        d = _object(data, "job")
        status = _get(d, "status", str, "job")
        if status not in ("queued", "running", "succeeded", "failed", "cancelled"):
            raise ProtocolError(f"job: unknown status {status!r:.60}")
        if not JOB_ID.fullmatch(_get(d, "job_id", str, "job")):
            raise ProtocolError(f"job: {d['job_id']!r:.60} is not a job id (32 hex digits)")
        metrics = d.get("metrics")
        return cls(
            job_id=_get(d, "job_id", str, "job"),
            status=status,  # type: ignore[arg-type]  # checked just above
            created_at=_get(d, "created_at", str, "job"),
            started_at=_opt(d, "started_at", str, "job"),
            finished_at=_opt(d, "finished_at", str, "job"),
            progress=Progress.from_json(d.get("progress")),
            hyperparameters=_object(d.get("hyperparameters", {}), "job hyperparameters"),
            dataset=_object(d.get("dataset", {}), "job dataset"),
            activate=_get(d, "activate", bool, "job"),
            min_validation_accuracy=_number(d, "min_validation_accuracy", "job"),
            metrics=_object(metrics, "job metrics") if metrics is not None else None,
            model_version=_opt(d, "model_version", str, "job"),
            activated=bool(d.get("activated", False)),
            error=_opt(d, "error", str, "job"),
            note=_opt(d, "note", str, "job"),
        )

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class ModelSummary:
    """One stored version in ``GET /models``; ``error`` says why it cannot be served.

    ``job_id``, ``note`` and ``data_sha256`` (the job that made it, its request's note, the
    sha256 of its training rows) are None for versions made before the server kept them.
    """

    version: str
    active: bool
    created_at: str | None = None
    hidden_units: int | None = None
    metrics: Mapping[str, Any] | None = None
    job_id: str | None = None
    note: str | None = None
    data_sha256: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> ModelSummary:
        d = _object(data, "model")
        metrics = d.get("metrics")
        return cls(
            version=_get(d, "version", str, "model"),
            active=bool(d.get("active", False)),
            created_at=_opt(d, "created_at", str, "model"),
            hidden_units=_opt(d, "hidden_units", int, "model"),
            metrics=_object(metrics, "model metrics") if metrics is not None else None,
            job_id=_opt(d, "job_id", str, "model"),
            note=_opt(d, "note", str, "model"),
            data_sha256=_opt(d, "data_sha256", str, "model"),
            error=_opt(d, "error", str, "model"),
        )


@dataclass(frozen=True)
class ModelDetail:
    """One stored version as ``GET /models/{version}`` shows it (without its history):
    the fields every version has, and ``metadata``, the whole answer as sent."""

    version: str
    active: bool
    created_at: str | None = None
    hidden_units: int | None = None
    hyperparameters: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    job_id: str | None = None
    note: str | None = None
    data_sha256: str | None = None
    weights_sha256: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> ModelDetail:
        d = _object(data, "model")
        hyperparameters, metrics = d.get("hyperparameters"), d.get("metrics")
        return cls(
            version=_get(d, "version", str, "model"),
            active=bool(d.get("active", False)),
            created_at=_opt(d, "created_at", str, "model"),
            hidden_units=_opt(d, "hidden_units", int, "model"),
            hyperparameters=(
                _object(hyperparameters, "model hyperparameters")
                if hyperparameters is not None
                else None
            ),
            metrics=_object(metrics, "model metrics") if metrics is not None else None,
            job_id=_opt(d, "job_id", str, "model"),
            note=_opt(d, "note", str, "model"),
            data_sha256=_opt(d, "data_sha256", str, "model"),
            weights_sha256=_opt(d, "weights_sha256", str, "model"),
            metadata=d,
        )


@dataclass(frozen=True)
class ModelList:
    """Stored versions, newest first; ``current`` is the active one, ``serving`` the loaded one."""

    current: str | None
    serving: str | None
    models: tuple[ModelSummary, ...]

    @classmethod
    def from_json(cls, data: Any) -> ModelList:
        d = _object(data, "models answer")
        models = d.get("models")
        if not isinstance(models, list):
            raise ProtocolError("models answer: 'models' is not a list")
        return cls(
            current=_opt(d, "current", str, "models answer"),
            serving=_opt(d, "serving", str, "models answer"),
            models=tuple(ModelSummary.from_json(m) for m in models),
        )


@dataclass(frozen=True)
class Activation:
    """The answer to ``POST /models/{version}/activate``."""

    current: str
    serving: str

    @classmethod
    def from_json(cls, data: Any) -> Activation:
        d = _object(data, "activate answer")
        return cls(
            current=_get(d, "current", str, "activate answer"),
            serving=_get(d, "serving", str, "activate answer"),
        )


@dataclass(frozen=True)
class Health:
    """``/healthz`` and ``/readyz`` together: alive, ready, the served version, any problem."""

    alive: bool
    ready: bool
    model_version: str | None = None
    problem: str | None = None


# -- the rollout: routing, its history, feedback, monitoring -----------------------------------


def _count(data: Mapping[str, Any], key: str, what: str) -> int:
    value = _get(data, key, int, what)
    if value < 0:
        raise ProtocolError(f"{what}: {key!r} is {value}, expected a count")
    return value


@dataclass(frozen=True)
class Canary:
    """A version that answers ``weight`` (strictly between 0 and 1) of the requests that
    name no version. With ``promote_after``, the rule judges it once it has that many
    feedback labels: promoted when its accuracy on those rows is at least stable's on the
    same rows less ``max_accuracy_drop``, rolled back otherwise; None: a person decides."""

    version: str
    weight: float
    promote_after: int | None = None
    max_accuracy_drop: float = 0.0

    @classmethod
    def from_json(cls, data: Any, what: str = "canary") -> Canary:
        d = _object(data, what)
        weight = _number(d, "weight", what)
        if weight is None:
            raise ProtocolError(f"{what}: no 'weight'")
        return cls(
            version=_get(d, "version", str, what),
            weight=weight,
            promote_after=_opt(d, "promote_after", int, what),
            max_accuracy_drop=_number(d, "max_accuracy_drop", what) or 0.0,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``PUT /routing`` form (``promote_after`` left out when None)."""
        body: dict[str, Any] = {"version": self.version, "weight": self.weight}
        if self.promote_after is not None:
            body["promote_after"] = self.promote_after
        body["max_accuracy_drop"] = self.max_accuracy_drop
        return body


def _shadow_version(data: Any, what: str) -> str | None:
    if data is None:
        return None
    return _get(_object(data, what), "version", str, what)


@dataclass(frozen=True)
class Routing:
    """``GET /routing`` (and the answer of ``PUT /routing``): ``stable`` is the active version,
    ``canary`` and ``shadow`` (a version) are None when unset, ``revision`` rises with every
    change. ``raw`` is the answer as sent."""

    stable: str | None
    canary: Canary | None
    shadow: str | None
    revision: int
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Routing:
        d = _object(data, "routing")
        canary = d.get("canary")
        return cls(
            stable=_opt(d, "stable", str, "routing"),
            canary=Canary.from_json(canary, "routing canary") if canary is not None else None,
            shadow=_shadow_version(d.get("shadow"), "routing shadow"),
            revision=_count(d, "revision", "routing"),
            raw=d,
        )


@dataclass(frozen=True)
class RoutingEvent:
    """One entry of ``GET /routing/history``: when (ISO 8601, UTC), what (``routing_changed``,
    ``promoted``, ``rolled_back``, ``promotion_failed``), why, the canary, shadow and
    revision after it, and for the rule's decisions the figures that decided it."""

    id: int
    at: str
    event: str
    reason: str
    canary: Canary | None
    shadow: str | None
    revision: int | None
    figures: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> RoutingEvent:
        d = _object(data, "routing history entry")
        routing = _object(d.get("routing", {}), "routing history entry routing")
        canary = routing.get("canary")
        figures = d.get("figures")
        return cls(
            id=_get(d, "id", int, "routing history entry"),
            at=_get(d, "at", str, "routing history entry"),
            event=_get(d, "event", str, "routing history entry"),
            reason=_get(d, "reason", str, "routing history entry"),
            canary=Canary.from_json(canary, "history canary") if canary is not None else None,
            shadow=_shadow_version(routing.get("shadow"), "history shadow"),
            revision=_opt(routing, "revision", int, "routing history entry routing"),
            figures=_object(figures, "history figures") if figures is not None else None,
            raw=d,
        )


@dataclass(frozen=True)
class Decision:
    """What the rule decided of a canary: ``promoted``, ``rolled_back`` or
    ``promotion_failed``, why, and the figures that decided it (None for a failure)."""

    event: str
    reason: str
    figures: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Any) -> Decision:
        d = _object(data, "decision")
        figures = d.get("figures")
        return cls(
            event=_get(d, "event", str, "decision"),
            reason=_get(d, "reason", str, "decision"),
            figures=_object(figures, "decision figures") if figures is not None else None,
        )

    @property
    def canary(self) -> str | None:
        """The canary decided of, as the figures name it."""
        found = (self.figures or {}).get("canary")
        return found if isinstance(found, str) else None


@dataclass(frozen=True)
class Feedback:
    """The answer to ``feedback``: the labels counted for ``model_version``, how many of them
    it predicts right, and what the rule decided upon this feedback, if anything."""

    model_version: str
    count: int
    correct: int
    decision: Decision | None = None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None

    @classmethod
    def from_json(cls, data: Any) -> Feedback:
        d = _object(data, "feedback answer")
        decision = d.get("decision")
        found = cls(
            model_version=_get(d, "model_version", str, "feedback answer"),
            count=_count(d, "count", "feedback answer"),
            correct=_count(d, "correct", "feedback answer"),
            decision=Decision.from_json(decision) if decision is not None else None,
        )
        if found.correct > found.count:
            raise ProtocolError(f"feedback answer: {found.correct} correct of {found.count}")
        return found


@dataclass(frozen=True)
class FeedbackFigures:
    """Labels counted for a version, how many it got right, and their fraction."""

    count: int
    correct: int
    accuracy: float | None

    @classmethod
    def from_json(cls, data: Any) -> FeedbackFigures:
        d = _object(data, "monitoring feedback")
        return cls(
            count=_count(d, "count", "monitoring feedback"),
            correct=_count(d, "correct", "monitoring feedback"),
            accuracy=_number(d, "accuracy", "monitoring feedback"),
        )


@dataclass(frozen=True)
class ShadowFigures:
    """Rows a version computed in shadow of stable, how many agreed, and their fraction."""

    count: int
    agreed: int
    agreement: float | None

    @classmethod
    def from_json(cls, data: Any) -> ShadowFigures:
        d = _object(data, "monitoring shadow")
        return cls(
            count=_count(d, "count", "monitoring shadow"),
            agreed=_count(d, "agreed", "monitoring shadow"),
            agreement=_number(d, "agreement", "monitoring shadow"),
        )


@dataclass(frozen=True)
class VersionFigures:
    """One version in ``GET /monitoring``: its role (``stable``, ``canary``, ``shadow`` or
    None), rows it answered, its feedback and, when it ran in shadow, its agreement."""

    version: str
    role: str | None
    served: int
    feedback: FeedbackFigures
    shadow: ShadowFigures | None = None

    @classmethod
    def from_json(cls, version: str, data: Any) -> VersionFigures:
        d = _object(data, f"monitoring of {version:.60}")
        shadow = d.get("shadow")
        return cls(
            version=version,
            role=_opt(d, "role", str, "monitoring"),
            served=_count(d, "served", "monitoring"),
            feedback=FeedbackFigures.from_json(d.get("feedback")),
            shadow=ShadowFigures.from_json(shadow) if shadow is not None else None,
        )


@dataclass(frozen=True)
class FeatureDrift:
    """A feature's population stability index (None while the window holds too few rows)."""

    feature: str
    psi: float | None
    drifted: bool


@dataclass(frozen=True)
class Drift:
    """The drift of the last ``rows`` inputs (of a ``window``) from the training data of
    ``reference`` (stable), by feature; ``drifted`` above ``threshold``."""

    reference: str
    reference_source: str | None
    window: int
    rows: int
    threshold: float
    features: Mapping[str, FeatureDrift]

    @classmethod
    def from_json(cls, data: Any) -> Drift:
        d = _object(data, "drift")
        features = _object(d.get("features"), "drift features")
        threshold = _number(d, "threshold", "drift")
        if threshold is None:
            raise ProtocolError("drift: no 'threshold'")
        found = {}
        for name, value in features.items():
            f = _object(value, f"drift of {name:.60}")
            found[name] = FeatureDrift(
                name, _number(f, "psi", "drift"), _get(f, "drifted", bool, "drift")
            )
        return cls(
            reference=_get(d, "reference", str, "drift"),
            reference_source=_opt(d, "reference_source", str, "drift"),
            window=_count(d, "window", "drift"),
            rows=_count(d, "rows", "drift"),
            threshold=threshold,
            features=found,
        )


@dataclass(frozen=True)
class Monitoring:
    """``GET /monitoring``: every counted version's figures (by version), and the drift of
    recent inputs. ``raw`` is the answer as sent."""

    versions: Mapping[str, VersionFigures]
    drift: Drift
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any) -> Monitoring:
        d = _object(data, "monitoring")
        versions = _object(d.get("versions"), "monitoring versions")
        return cls(
            versions={v: VersionFigures.from_json(v, f) for v, f in versions.items()},
            drift=Drift.from_json(d.get("drift")),
            raw=d,
        )
