"""Runtimes turn a verified artifact folder into an object with ``predict``."""

from mlserve.runtimes.base import FLOAT32_BOUND, Batch, Runtime
from mlserve.runtimes.loader import RUNTIMES, load_runtime
from mlserve.runtimes.sklearn import SklearnRuntime, dump_sklearn, load_sklearn

__all__ = [
    "FLOAT32_BOUND",
    "RUNTIMES",
    "Batch",
    "Runtime",
    "SklearnRuntime",
    "dump_sklearn",
    "load_runtime",
    "load_sklearn",
]
