"""The protocol's names for this server: its one model, its tensors, the extensions it refuses."""

from __future__ import annotations

import importlib.metadata
import zlib

from model.network import N_CLASSES

MODEL_NAME = "iris"
PLATFORM = "numpy"
SERVER_NAME = "iris-service"
try:
    SERVER_VERSION = importlib.metadata.version("iris-service")
except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
    SERVER_VERSION = "unknown"

INPUT = "measurements"
INPUT_DATATYPES = ("FP64", "FP32")
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "probabilities": ("FP64", [-1, N_CLASSES]),
    "class_index": ("INT64", [-1]),
    "label": ("BYTES", [-1]),
}
# The protocol's tensor datatypes; they are case-sensitive.
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)  # fmt: skip
MAX_DIMENSION = 2**64 - 1  # "each dimension must be ... an unsigned 64-bit integer"
MAX_ELEMENTS = 2**63 - 1  # what a NumPy index (int64) can count
BINARY_HEADER = "inference-header-content-length"
# The binary tensor data extension: the byte size of each datatype this server reads or
# writes in binary (little-endian); BYTES elements are each a 4-byte length, then the bytes.
ELEMENT_BYTES = {"FP64": 8, "FP32": 4, "INT64": 8}
EXTENSIONS = ["binary_tensor_data"]
# Tensor parameters of extensions this server does not implement: a clear 400, rather than
# an answer the client would misread.
UNSUPPORTED = {
    "shared_memory_region": "the shared-memory extension is not supported: send tensors as "
    "JSON or binary data",
    "classification": "the classification extension is not supported: request the "
    "'probabilities', 'class_index' and 'label' outputs instead",
}
# Content-Encoding -> zlib wbits: gzip framing, or the zlib format HTTP calls deflate.
INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
