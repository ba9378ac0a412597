"""A typed client of the Iris service's HTTP API, and the ``iris`` command line.

```python
from iris_client import IrisClient

with IrisClient("http://127.0.0.1:8000", token="...") as iris:
    predictions = iris.predict("flowers.csv")      # split by the server's limits, in order
    job = iris.train({"epochs": 300, "validation_fraction": 0.2}, min_validation_accuracy=0.9)
    ended = job.wait(progress=lambda j: print(j.progress.epoch))
```

Speaks HTTP, and for ``infer`` gRPC too: it imports nothing of the service or the model
core. Names are loaded on first use, so ``iris --help`` does not pay for httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iris_client._core import RetryPolicy
    from iris_client._oip import Inferred
    from iris_client.aio import AsyncIrisClient, AsyncJobHandle
    from iris_client.errors import (
        AuthenticationError,
        BadRequestError,
        ConflictError,
        ConnectionFailedError,
        FieldError,
        InputError,
        IrisError,
        LimitsWarning,
        NotFoundError,
        ProblemError,
        ProtocolError,
        ServerError,
        UnavailableError,
        ValidationError,
        WaitTimeoutError,
    )
    from iris_client.sync import IrisClient, JobHandle
    from iris_client.types import (
        Activation,
        Canary,
        Decision,
        Drift,
        FeatureDrift,
        Feedback,
        FeedbackFigures,
        Gradients,
        Health,
        Hyperparameters,
        Job,
        Limits,
        ModelDetail,
        ModelList,
        ModelSummary,
        Monitoring,
        Prediction,
        Predictions,
        Progress,
        Routing,
        RoutingEvent,
        ShadowFigures,
        VersionFigures,
    )

__all__ = [
    "Activation",
    "AsyncIrisClient",
    "AsyncJobHandle",
    "AuthenticationError",
    "BadRequestError",
    "Canary",
    "ConflictError",
    "ConnectionFailedError",
    "Decision",
    "Drift",
    "FeatureDrift",
    "Feedback",
    "FeedbackFigures",
    "FieldError",
    "Gradients",
    "Health",
    "Hyperparameters",
    "Inferred",
    "InputError",
    "IrisClient",
    "IrisError",
    "Job",
    "JobHandle",
    "Limits",
    "LimitsWarning",
    "ModelDetail",
    "ModelList",
    "ModelSummary",
    "Monitoring",
    "NotFoundError",
    "Prediction",
    "Predictions",
    "ProblemError",
    "Progress",
    "ProtocolError",
    "RetryPolicy",
    "Routing",
    "RoutingEvent",
    "ServerError",
    "ShadowFigures",
    "UnavailableError",
    "ValidationError",
    "VersionFigures",
    "WaitTimeoutError",
]
_MODULES = (
    "iris_client.sync",
    "iris_client.aio",
    "iris_client.errors",
    "iris_client.types",
    "iris_client._core",
)


def __getattr__(name: str) -> Any:
    """Import on first use: ``import client`` alone loads neither httpx nor NumPy."""
    if name in __all__:
        for module in _MODULES:
            found = importlib.import_module(module)
            if hasattr(found, name):
                return getattr(found, name)
    raise AttributeError(f"module 'client' has no attribute {name!r}")
