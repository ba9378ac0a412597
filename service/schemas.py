"""Request and response bodies: pydantic at the edge only, nothing of it crosses into model/."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    create_model,
    model_validator,
)

from model.data import CLASSES, MAX_MEASUREMENT_CM
from model.persistence import VERSION_PATTERN
from model.train import RULES, Interval, hyperparameter_fields

Measurement = Annotated[
    float,
    Field(
        gt=0,
        le=MAX_MEASUREMENT_CM,
        strict=True,  # strings and booleans are not numbers
        allow_inf_nan=False,
        description="centimetres, above 0 and at most 100",
    ),
]


def integral(value: Any) -> Any:
    """JSON Schema counts 1.0 as an integer, so accept it as 1; 2.5, "1" and true stay refused."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, Strict(), BeforeValidator(integral)]
Number = Annotated[float, Strict()]  # ints are numbers; strings and booleans are not
Boolean = Annotated[bool, Strict()]
Species = Literal["setosa", "versicolor", "virginica"]
# The validator after Field keeps minimum/maximum (not ge/le) in the JSON Schema of the union.
ClassIndex = Annotated[
    int, Field(ge=0, le=len(CLASSES) - 1, strict=True), BeforeValidator(integral)
]
Version = Annotated[
    str, Field(pattern=VERSION_PATTERN, examples=["20261128T004614.062920Z-7483c053"])
]
Reduction = Literal["mean", "sum", "none"]
Include = Literal["activations", "intermediates", "input"]
MAX_NOTE = 200
# C0 and C1 control characters and DEL: a note is one line of plain text.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain_line(value: str) -> str:
    """A note without control characters (a newline, a tab, an escape sequence)."""
    found = CONTROL.search(value)
    if found is not None:
        raise ValueError(
            f"control character {found.group()!r} at position {found.start()}: "
            "a note is one line of plain text"
        )
    return value


Note = Annotated[
    str,
    Strict(),
    Field(
        max_length=MAX_NOTE,
        description=f"free text kept with the job and its version: at most {MAX_NOTE} "
        "characters, no control characters",
        json_schema_extra={"pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
        examples=["more epochs after the April data"],
    ),
    AfterValidator(plain_line),
]


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Instance(Closed):
    sepal_length: Measurement
    sepal_width: Measurement
    petal_length: Measurement
    petal_width: Measurement


class Sample(Instance):
    species: Species


class PredictRequest(Closed):
    instances: list[Instance] = Field(
        min_length=1, fail_fast=True, description="at most IRIS_MAX_INSTANCES rows"
    )
    model_version: Version | None = Field(
        None, description="a stored version; default: the active one"
    )


class Prediction(BaseModel):
    label: Species
    class_index: int
    probabilities: dict[Species, float]


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


class GradientsRequest(Closed):
    instances: list[Instance] = Field(
        min_length=1, fail_fast=True, description="at most IRIS_MAX_INSTANCES rows"
    )
    labels: list[Species | ClassIndex] = Field(
        min_length=1, fail_fast=True, description="one per instance, by name or by class index"
    )
    reduction: Reduction = "mean"
    include: list[Include] = Field(default_factory=list, max_length=3, fail_fast=True)
    model_version: Version | None = None

    @model_validator(mode="after")
    def one_label_per_instance(self) -> GradientsRequest:
        if len(self.labels) != len(self.instances):
            raise ValueError(
                f"labels: {len(self.labels)} labels for {len(self.instances)} instances; "
                "give one label per instance"
            )
        return self


Nested = list[Any]


class ParamGradients(BaseModel):
    W1: Nested
    b1: Nested
    W2: Nested
    b2: Nested


class Activations(BaseModel):
    x: Nested
    h_a: Nested
    h_s: Nested
    o_a: Nested
    o_s: Nested


class Intermediates(BaseModel):
    do_a: Nested
    dh_s: Nested
    dh_a: Nested


class InputGradients(BaseModel):
    x: Nested = Field(description="dL/dx of the standardised input")
    measurements: Nested = Field(description="dL/d(raw measurement in cm)")


class GradientsResponse(BaseModel):
    model_version: str
    reduction: Reduction
    loss: float | list[float]
    gradients: ParamGradients
    activations: Activations | None = None
    intermediates: Intermediates | None = None
    input_gradients: InputGradients | None = None


def hyperparameter_field(kind: type, default: Any, allowed: Interval | None, about: str) -> Any:
    """The pydantic field of one hyperparameter, from its statement in the model core."""
    bounds: dict[str, Any] = {}
    if allowed is not None:
        bounds["gt" if allowed.low_open else "ge"] = allowed.low
        if allowed.high != math.inf:
            bounds["lt" if allowed.high_open else "le"] = allowed.high
    if kind is float:
        bounds["allow_inf_nan"] = False
    annotation = {int: Integer, float: Number, bool: Boolean}[kind]
    return (annotation, Field(default, description=about, **bounds))


def rule_schemas() -> dict[str, Any]:
    """The cross-field rules as JSON Schema (if/then), so clients and fuzzers can know them."""
    schemas = []
    for rule in RULES:
        allowed = rule.allowed
        bound = {
            "exclusiveMinimum" if allowed.low_open else "minimum": allowed.low,
            "exclusiveMaximum" if allowed.high_open else "maximum": allowed.high,
        }
        schemas.append(
            {
                "if": {"properties": {rule.field: {"const": rule.value}}, "required": [rule.field]},
                "then": {"properties": {rule.needs: bound}, "required": [rule.needs]},
            }
        )
    return schemas[0] if len(schemas) == 1 else {"allOf": schemas}


class HyperparametersBase(BaseModel):
    """The rules across fields (model.train.RULES); the fields come from the model core."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=rule_schemas())

    @model_validator(mode="after")
    def rules_hold(self) -> HyperparametersBase:
        for rule in RULES:
            if getattr(self, rule.field) == rule.value and getattr(self, rule.needs) not in (
                rule.allowed
            ):
                raise ValueError(rule.message)
        return self


if TYPE_CHECKING:
    HyperparametersIn = HyperparametersBase
else:
    # Every field, default, bound and description is model.train.Hyperparameters's own.
    HyperparametersIn = create_model(
        "HyperparametersIn",
        __base__=HyperparametersBase,
        **{name: hyperparameter_field(*rest) for name, *rest in hyperparameter_fields()},
    )


class DatasetIn(Closed):
    samples: list[Sample] = Field(
        min_length=15, fail_fast=True, description="at most IRIS_MAX_TRAIN_ROWS rows"
    )


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {
                "properties": {"min_validation_accuracy": {"type": "number"}},
                "required": ["min_validation_accuracy"],
            },
            "then": {
                "properties": {
                    "hyperparameters": {
                        "properties": {"validation_fraction": {"exclusiveMinimum": 0}},
                        "required": ["validation_fraction"],
                    }
                },
                "required": ["hyperparameters"],
            },
        },
    )
    hyperparameters: HyperparametersIn = Field(default_factory=HyperparametersIn)
    dataset: DatasetIn | None = Field(None, description="default: the shipped Iris data")
    activate: Boolean = True
    min_validation_accuracy: Number | None = Field(
        None, ge=0, le=1, description="quality gate: activate only at or above this"
    )
    note: Note | None = None

    @model_validator(mode="after")
    def gate_needs_validation(self) -> TrainRequest:
        if self.min_validation_accuracy is not None and (
            self.hyperparameters.model_dump()["validation_fraction"] == 0
        ):
            raise ValueError(
                "min_validation_accuracy needs hyperparameters.validation_fraction above 0"
            )
        return self


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    epoch: int
    epochs: int
    train_loss: float | None = None
    train_accuracy: float | None = None
    validation_loss: float | None = None
    validation_accuracy: float | None = None


class Job(BaseModel):
    job_id: str
    status: JobStatus
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    progress: Progress
    hyperparameters: dict[str, Any]
    dataset: dict[str, Any]
    activate: bool
    min_validation_accuracy: float | None = None
    metrics: dict[str, Any] | None = None
    model_version: str | None = None
    activated: bool = False
    error: str | None = None
    cancel_requested: bool = Field(
        False, description="a cancel was asked for: training stops at the next epoch boundary"
    )
    note: str | None = Field(None, description="the note of the training request")


class JobList(BaseModel):
    jobs: list[Job]


class ModelSummary(BaseModel):
    version: str
    created_at: str | None = None
    active: bool
    hidden_units: int | None = None
    metrics: dict[str, Any] | None = None
    job_id: str | None = Field(None, description="the training job that made it")
    note: str | None = Field(None, description="the note of that job's request")
    data_sha256: str | None = Field(
        None,
        description="sha256 of its training rows: the features as little-endian float64 "
        "(n, 4) in C order, then the class indices as little-endian int64",
    )
    error: str | None = Field(None, description="why this version cannot be served")


class ModelList(BaseModel):
    current: str | None
    serving: str | None = Field(description="the version this worker serves")
    models: list[ModelSummary]


class Limits(BaseModel):
    """What one request may hold; clients split their work to fit."""

    max_instances: int = Field(description="rows per /predict, /gradients or /v2 infer")
    max_body_bytes: int = Field(description="bytes of a request body")
    max_train_rows: int = Field(description="rows of a training dataset")


class Problem(BaseModel):
    """An RFC 9457 problem document (application/problem+json)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


# -- the rollout: routing, feedback, monitoring ------------------------------------------------


# Constraints inside the type, so that the JSON Schema of the optional field keeps them.
PromoteAfter = Annotated[int, Field(ge=1, le=1_000_000_000, strict=True), BeforeValidator(integral)]
Revision = Annotated[int, Field(ge=0, strict=True), BeforeValidator(integral)]


class CanarySpec(Closed):
    version: Version
    weight: float = Field(
        gt=0, lt=1, strict=True, description="share of the requests that pin no version"
    )
    promote_after: PromoteAfter | None = Field(
        None,
        description="feedback labels after which the rule promotes or rolls back the "
        "canary; null: no rule, a person decides",
    )
    max_accuracy_drop: float = Field(
        0.0,
        ge=0,
        le=1,
        strict=True,
        description="how much lower than stable's (on the same labelled rows) the canary's "
        "accuracy may be and still be promoted",
    )


class ShadowSpec(Closed):
    version: Version


class RoutingRequest(Closed):
    """PUT /routing: the whole plan but stable (omitted parts mean none)."""

    canary: CanarySpec | None = None
    shadow: ShadowSpec | None = None
    stable: Version | None = Field(
        None,
        description="ignored when given (what GET /routing answered can be sent back): "
        "stable is the active version, which POST /models/{version}/activate sets",
    )
    revision: Revision | None = Field(
        None,
        description="the revision the change was made from (GET /routing's): when given, "
        "a 409 if the routing changed since",
    )


class Routing(BaseModel):
    stable: str | None
    canary: CanarySpec | None
    shadow: ShadowSpec | None
    revision: int


class FeedbackRequest(Closed):
    model_version: Version = Field(description="the version that answered these rows")
    instances: list[Instance] = Field(
        min_length=1, fail_fast=True, description="at most IRIS_MAX_INSTANCES rows"
    )
    labels: list[Species | ClassIndex] = Field(
        min_length=1, fail_fast=True, description="their true species, by name or class index"
    )

    @model_validator(mode="after")
    def one_label_per_instance(self) -> FeedbackRequest:
        if len(self.labels) != len(self.instances):
            raise ValueError(
                f"labels: {len(self.labels)} labels for {len(self.instances)} instances; "
                "give one label per instance"
            )
        return self


class Decision(BaseModel):
    event: str = Field(description="promoted, rolled_back or promotion_failed")
    reason: str
    figures: dict[str, Any] | None = None


class FeedbackResponse(BaseModel):
    model_version: str
    count: int = Field(description="labels counted")
    correct: int = Field(description="how many the version predicts right")
    decision: Decision | None = Field(
        description="what the rule decided of the canary upon this feedback, if anything"
    )


class FeedbackFigures(BaseModel):
    count: int
    correct: int
    accuracy: float | None = Field(description="correct / count; null without feedback")


class ShadowFigures(BaseModel):
    count: int = Field(description="rows the version computed in shadow of stable")
    agreed: int
    agreement: float | None = Field(description="agreed / count")


class TrialFigures(BaseModel):
    labels: int = Field(description="feedback labels of the canary's trial, which the rule counts")
    promote_after: int | None
    canary_accuracy: float | None
    stable_accuracy: float | None = Field(description="stable's, on the same labelled rows")


class VersionFigures(BaseModel):
    role: Literal["stable", "canary", "shadow", "promoted canary"] | None
    served: int = Field(description="rows the version answered (predictions and gradients)")
    feedback: FeedbackFigures
    shadow: ShadowFigures | None
    trial: TrialFigures | None = Field(None, description="the canary's only")


class FeatureDrift(BaseModel):
    psi: float | None = Field(description="null while the window holds too few rows")
    drifted: bool


class Drift(BaseModel):
    reference: str = Field(description="the stable version, whose training data is compared")
    reference_source: str | None = Field(
        description="'training rows' (kept with the version), or 'normal approximation' "
        "(a version whose training rows are not known)"
    )
    window: int = Field(description="IRIS_DRIFT_WINDOW")
    rows: int = Field(description="rows in the window now")
    threshold: float = Field(description="IRIS_DRIFT_PSI_THRESHOLD")
    features: dict[str, FeatureDrift]


class Monitoring(BaseModel):
    versions: dict[str, VersionFigures]
    drift: Drift


class HistoryEntry(BaseModel):
    id: int
    at: str
    event: str = Field(
        description="routing_changed, activated, promoted, rolled_back, promotion_failed"
    )
    reason: str
    routing: dict[str, Any] = Field(description="stable, canary and shadow after the change")
    figures: dict[str, Any] | None = Field(description="what decided it, for the rule's")


class RoutingHistory(BaseModel):
    history: list[HistoryEntry]
