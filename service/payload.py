"""The training job as the child receives it: one npz on its standard input.

Encoded by the launcher (:func:`encode`) and decoded by the training child (:func:`decode`),
here and nowhere else. Read with ``allow_pickle=False``: arrays and a JSON header only.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from model.data import Dataset
from service.job_store import JobSpec


def encode(
    job_id: str,
    spec: JobSpec,
    dataset: Dataset,
    max_training_seconds: float | None = None,
) -> bytes:
    """Everything the child needs, as one npz on its standard input."""
    header = {
        "max_training_seconds": max_training_seconds,
        "job_id": job_id,
        "hyperparameters": spec.hyperparameters,
        "dataset": spec.dataset,
        "activate": spec.activate,
        "min_validation_accuracy": spec.min_validation_accuracy,
        "note": spec.note,
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        raw=dataset.raw,
        y=dataset.y,
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
    )
    return buffer.getvalue()


def decode(payload: bytes) -> tuple[dict[str, Any], Dataset]:
    """The header (job id, hyperparameters, ...) and the dataset of an encoded job."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        header = json.loads(npz["header"].tobytes())
        dataset = Dataset(raw=npz["raw"], y=npz["y"])
    return header, dataset
