"""Write an in-memory model to the file its framework's runtime loads, for registration.

Types are told apart by the module and name of their classes, so XGBoost, LightGBM and ONNX
are never imported here: a model of theirs exists only when its package is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlserve.errors import InvalidInput
from mlserve.runtimes import dump_sklearn, pickled_framework

_BOOSTERS = {
    ("xgboost", "Booster"): ("xgboost", "model.ubj"),
    ("lightgbm", "Booster"): ("lightgbm", "model.txt"),
}
"""(top-level package, class name) of a native booster -> its framework and file name, in the
format the framework's runtime reads (UBJSON for XGBoost, text for LightGBM)."""


@dataclass(frozen=True, slots=True)
class SavedModel:
    """A model written to disk, and the framework whose runtime serves it."""

    path: Path
    framework: str


def save_model(model: Any, folder: Path, *, safe: bool) -> SavedModel:
    """Write ``model`` into ``folder`` as its framework's runtime loads it.

    A native XGBoost or LightGBM booster is saved with its own ``save_model``; an ONNX
    ``ModelProto`` as its serialized bytes; anything else with a ``predict`` method (a
    scikit-learn estimator or pipeline, XGBoost's and LightGBM's scikit-learn models) with
    joblib, or as a skops file when ``safe`` loading refuses pickles. Raises InvalidInput for
    any other object.
    """
    native = _native_kind(model)
    if native is not None:
        framework, file_name = native
        path = folder / file_name
        model.save_model(str(path))
        return SavedModel(path, framework)
    if _is_onnx_model(model):
        path = folder / "model.onnx"
        path.write_bytes(model.SerializeToString())
        return SavedModel(path, "onnx")
    if callable(getattr(model, "predict", None)):
        path = dump_sklearn(model, folder / ("model.skops" if safe else "model.joblib"))
        return SavedModel(path, pickled_framework(model))
    raise InvalidInput(
        f"cannot register a {type(model).__module__}.{type(model).__qualname__}: give a "
        "scikit-learn estimator or pipeline, an XGBoost or LightGBM model or booster, an ONNX "
        "ModelProto, or the path of a model file or folder"
    )


def _native_kind(model: Any) -> tuple[str, str] | None:
    """(framework, file name) when ``model`` is (a subclass of) a native booster."""
    for cls in type(model).__mro__:
        found = _BOOSTERS.get((cls.__module__.split(".", 1)[0], cls.__name__))
        if found is not None:
            return found
    return None


def _is_onnx_model(model: Any) -> bool:
    """True for an ``onnx.ModelProto`` (its class lives in a generated ``onnx.*_pb2`` module)."""
    cls = type(model)
    return cls.__module__.split(".", 1)[0] == "onnx" and cls.__name__ == "ModelProto"
