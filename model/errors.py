"""Errors raised by the model core.

Our exception hierarchy::

    IrisModelError
    ├── DataError                 bad training or evaluation data (names row and problem)
    ├── HyperparameterError       a hyperparameter outside its range
    ├── TrainingError
    │   ├── TrainingDivergedError the loss became NaN or infinite
    │   ├── TrainingNotImprovedError the final loss is not below the initial one
    │   └── TrainingCancelledError the cancellation hook asked training to stop
    └── ModelStoreError
        ├── InvalidVersionError   a version id that is not well formed (never a path)
        ├── ModelNotFoundError    no stored version with that id
        ├── NoCurrentModelError   CURRENT is missing: nothing is active
        ├── DanglingCurrentError  CURRENT names a version that is not stored
        ├── StoreWriteError       a save or an activation could not be written
        ├── StoreUnavailableError the model database cannot be reached
        ├── ModelInUseError       the current version cannot be deleted
        └── CorruptModelError     a stored version that must not be served
            ├── ChecksumMismatchError   weights.npz differs from its recorded sha256
            ├── UnreadableModelError    truncated or malformed files, pickled objects
            ├── ShapeError              arrays of the wrong names, dtypes or shapes
            └── NonFiniteWeightsError   a NaN or an infinity in the weights

Domain errors carry no HTTP status codes; the service maps them.
"""

from __future__ import annotations


class IrisModelError(Exception):
    """Base class of every error the model core raises on purpose."""


class DataError(IrisModelError, ValueError):
    """Training or evaluation data that breaks a rule; the message names row and problem."""


class HyperparameterError(IrisModelError, ValueError):
    """A hyperparameter outside its range; the message names it."""


class TrainingError(IrisModelError, RuntimeError):
    """Training stopped before it finished."""


class TrainingDivergedError(TrainingError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"training diverged: the loss became {loss!r} in epoch {epoch}; "
            "try a smaller learning_rate"
        )
        self.epoch = epoch
        self.loss = loss


class TrainingNotImprovedError(TrainingError):
    """The final training loss is not below the loss of the initial parameters."""

    def __init__(self, initial_loss: float, final_loss: float) -> None:
        super().__init__(
            f"training did not improve the model: the final training loss {final_loss:.6g} is "
            f"not below the initial loss {initial_loss:.6g}; try a smaller learning_rate or "
            "momentum"
        )
        self.initial_loss = initial_loss
        self.final_loss = final_loss


class TrainingCancelledError(TrainingError):
    """The cancellation hook asked training to stop."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"training was cancelled after epoch {epoch}")
        self.epoch = epoch


class ModelStoreError(IrisModelError):
    """Base class of the model store's errors."""


class InvalidVersionError(ModelStoreError, ValueError):
    """A version id that is not well formed."""


class ModelNotFoundError(ModelStoreError, LookupError):
    """No stored version with the given id."""


class NoCurrentModelError(ModelStoreError, LookupError):
    """The store has no CURRENT pointer."""


class DanglingCurrentError(ModelStoreError, LookupError):
    """CURRENT names a version that is not stored, or is not a version id."""


class StoreWriteError(ModelStoreError, OSError):
    """Writing a version or the CURRENT pointer failed (full disk, read-only directory, ...)."""


class StoreUnavailableError(ModelStoreError):
    """The database that holds the models cannot be reached (down, restarting, refusing)."""


class ModelInUseError(ModelStoreError):
    """The version asked to be deleted is the current (served) one."""


class CorruptModelError(ModelStoreError, ValueError):
    """A stored version failed verification and must not be served."""


class ChecksumMismatchError(CorruptModelError):
    """weights.npz does not match the sha256 recorded in model.json."""


class UnreadableModelError(CorruptModelError):
    """A truncated or malformed file, or an object array that would need pickle."""


class ShapeError(CorruptModelError):
    """Arrays with the wrong names, dtypes or shapes."""


class NonFiniteWeightsError(CorruptModelError):
    """A NaN or an infinity in the stored arrays."""
