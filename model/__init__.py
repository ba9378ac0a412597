"""A two-layer perceptron for Iris species in NumPy: network, training, data and model store.

Pure NumPy and the standard library: no web framework, no environment reads.
"""

from model.data import CLASSES, FEATURES, Dataset, from_rows, load_csv, load_iris
from model.network import Cache, Gradients, Model, Params, Standardizer, backward, forward, loss
from model.persistence import ModelStore, StoredModel
from model.train import EpochStats, Hyperparameters, TrainResult, train

__all__ = [
    "CLASSES",
    "FEATURES",
    "Cache",
    "Dataset",
    "EpochStats",
    "Gradients",
    "Hyperparameters",
    "Model",
    "ModelStore",
    "Params",
    "Standardizer",
    "StoredModel",
    "TrainResult",
    "backward",
    "forward",
    "from_rows",
    "load_csv",
    "load_iris",
    "loss",
    "train",
]
