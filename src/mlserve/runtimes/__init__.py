"""Runtimes turn a verified artifact folder into an object with ``predict``."""

from mlserve.runtimes.archive import pack_folder, unpacked
from mlserve.runtimes.base import FLOAT32_BOUND, Batch, ModelFacts, Runtime
from mlserve.runtimes.loader import (
    RUNTIMES,
    detect_framework,
    load_runtime,
    pickled_framework,
    runtime_class,
)
from mlserve.runtimes.sklearn import SklearnRuntime, dump_sklearn, estimator_facts, load_sklearn

__all__ = [
    "FLOAT32_BOUND",
    "RUNTIMES",
    "Batch",
    "ModelFacts",
    "Runtime",
    "SklearnRuntime",
    "detect_framework",
    "dump_sklearn",
    "estimator_facts",
    "load_runtime",
    "load_sklearn",
    "pack_folder",
    "pickled_framework",
    "runtime_class",
    "unpacked",
]
