"""MLflow models served through MLflow's own ``pyfunc`` loader, and what an ``MLmodel`` says.

Any MLflow model folder (one holding an ``MLmodel`` file) loads here, whatever its flavour:
`mlserve import` registers scikit-learn, XGBoost and LightGBM flavours with their native
runtimes instead, and everything else as this one. A pyfunc model unpickles objects and may
run code shipped with it, so safe loading refuses it.

The ``MLmodel`` signature becomes the mlserve signature: column names in order, ``string``
columns categorical, ``boolean`` ones boolean, every number float64 (rows are cast back to the
column types MLflow declared before ``predict``). A tensor signature of one ``(-1, n)``
numeric tensor becomes features ``f0`` to ``f{n-1}``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

with warnings.catch_warnings():
    # mlflow.pyfunc warns, as it is imported, about type hints of its own agent classes.
    warnings.simplefilter("ignore", UserWarning)
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

from mlserve.errors import ArtifactError, InvalidInput, UnsafeArtifact
from mlserve.runtimes.archive import unpacked
from mlserve.runtimes.base import Batch, ModelFacts
from mlserve.runtimes.python import one_per_row, signature_frame
from mlserve.types import (
    Feature,
    FeatureKind,
    Signature,
    Task,
    VersionManifest,
    default_feature_names,
)

MLMODEL_FILE = "MLmodel"

_NUMERIC_TYPES: dict[str, np.dtype[Any]] = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
    "long": np.dtype(np.int64),
    "integer": np.dtype(np.int32),
}
"""MLflow column types that are numbers -> the numpy dtype MLflow's schema check expects."""
_CLASS_TYPES = frozenset({"long", "integer", "string", "boolean"})
"""MLflow output types that make a model a classifier (its answers are labels)."""


@dataclass(frozen=True, slots=True)
class MlflowModel:
    """What an ``MLmodel`` file says: flavours, run, signature and input example."""

    flavors: dict[str, dict[str, Any]]
    """Flavour name -> its section of ``MLmodel`` (``python_function``, ``sklearn``, …)."""
    run_id: str | None
    signature: Signature | None
    input_example: pd.DataFrame | None
    column_types: dict[str, str] = field(default_factory=dict)
    """Input column -> MLflow type (``long``, ``string``, …) for column signatures."""

    def facts(self) -> ModelFacts:
        """The model facts registration takes: the whole signature and the input example."""
        signature = self.signature
        return ModelFacts(
            feature_names=None if signature is None else tuple(signature.feature_names),
            n_features=None if signature is None else len(signature.inputs),
            classes=() if signature is None else signature.classes,
            signature=signature,
            input_example=self.input_example,
        )


def read_mlflow_model(folder: Path) -> MlflowModel:
    """Read ``folder/MLmodel`` and the input example beside it; runs no model code.

    Raises ArtifactError when the folder is no MLflow model or its signature cannot be served.
    """
    if not (folder / MLMODEL_FILE).is_file():
        raise ArtifactError(f"{folder} is not an MLflow model (no {MLMODEL_FILE} file)")
    try:
        meta = Model.load(str(folder))
        example = meta.load_input_example(str(folder))
    except (MlflowException, OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {folder / MLMODEL_FILE}: {_first_line(exc)}") from None
    signature, column_types = (None, {}) if meta.signature is None else _signature(meta.signature)
    frame = example if isinstance(example, pd.DataFrame) else None
    if frame is not None and signature is not None:
        if not set(signature.feature_names) <= set(map(str, frame.columns)):
            frame = None  # an example of another shape says nothing about these features
        else:
            frame = frame.rename(columns=str)[signature.feature_names]
    return MlflowModel(
        flavors={name: dict(section or {}) for name, section in meta.flavors.items()},
        run_id=meta.run_id,
        signature=signature,
        input_example=frame,
        column_types=column_types,
    )


class MlflowRuntime:
    """Any MLflow model, loaded with ``mlflow.pyfunc.load_model`` and given frames."""

    framework: ClassVar[str] = "mlflow"
    needs_process: ClassVar[bool] = False

    def __init__(self, model: Any, signature: Signature, column_types: dict[str, str]) -> None:
        self._model = model
        self.signature = signature
        self._column_types = column_types

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> MlflowRuntime:
        """Unpack the version's zip and load it with pyfunc; raises UnsafeArtifact under safe
        loading, ArtifactError when MLflow cannot load it."""
        _refuse_when_safe(safe)
        model_folder = unpacked(folder / manifest.model_file, manifest.sha256)
        described = read_mlflow_model(model_folder)
        try:
            with warnings.catch_warnings():
                # MLflow warns about how the model was written (no type hints on predict, other
                # package versions than the saving environment's): nothing a server can act on.
                warnings.simplefilter("ignore")
                model = mlflow.pyfunc.load_model(str(model_folder))
        except Exception as exc:  # the flavour's loader and its pickles can raise anything
            raise ArtifactError(
                f"MLflow could not load the model: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        return cls(model, manifest.signature, described.column_types)

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """The ``MLmodel`` signature and input example of the folder at ``path``."""
        _refuse_when_safe(safe)
        return read_mlflow_model(path).facts()

    @property
    def has_proba(self) -> bool:
        """False: a pyfunc model has ``predict`` only."""
        return False

    @property
    def classes(self) -> list[object]:
        """Class labels when the signature records them (empty otherwise)."""
        return list(self.signature.classes)

    @property
    def scales_with_threads(self) -> bool:
        """False: nothing says a flavour answers a block of rows as it answers them all."""
        return False

    def predict(self, batch: Batch) -> np.ndarray:
        """pyfunc ``predict`` on the rows as a frame of the column types MLflow declared."""
        frame = signature_frame(batch, self.signature)
        frame = _as_declared(frame, self._column_types)
        try:
            outputs = self._model.predict(frame)
        except MlflowException as exc:
            # MLflow's own schema check: the rows do not fit what the model declared.
            raise ValueError(_first_line(exc)) from None
        return one_per_row(outputs, len(frame), "predict")

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Raises InvalidInput: a pyfunc model gives no probabilities."""
        raise InvalidInput("this model does not give probabilities (an MLflow pyfunc model)")

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Raises InvalidInput: a pyfunc model gives no probabilities."""
        raise InvalidInput("this model does not give probabilities (an MLflow pyfunc model)")


def _as_declared(frame: pd.DataFrame, column_types: dict[str, str]) -> pd.DataFrame:
    """``frame`` with each column cast to the type the MLmodel declares: MLflow's schema check
    refuses float64 values for a ``long`` column, or for a ``boolean`` one. Raises ValueError
    (the rows' fault) for a value the declared type cannot hold."""
    for name, mlflow_type in column_types.items():
        dtype = _NUMERIC_TYPES.get(mlflow_type)
        if name not in frame.columns or (dtype is None and mlflow_type != "boolean"):
            continue
        values = frame[name].to_numpy(dtype=np.float64)
        if dtype is not None and dtype.kind == "f":
            frame[name] = values.astype(dtype)
            continue
        with np.errstate(invalid="ignore"):
            bound = np.iinfo(dtype).max if dtype is not None else 1
            fits = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) <= bound)
        if not fits.all():
            bad = float(values[~fits][0])
            raise ValueError(f"feature {name!r} takes {mlflow_type} values, not {bad!r}")
        frame[name] = values.astype(dtype if dtype is not None else bool)
    return frame


def _signature(signature: Any) -> tuple[Signature, dict[str, str]]:
    """An MLflow ``ModelSignature`` as ours, with each input column's MLflow type."""
    inputs = signature.inputs
    column_types: dict[str, str] = {}
    if inputs.is_tensor_spec():
        features = _tensor_features(inputs.inputs)
    else:
        features = []
        for column in inputs.inputs:
            mlflow_type = getattr(column.type, "name", str(column.type))
            name = column.name
            if name is None:
                raise ArtifactError("the MLmodel signature has a column without a name")
            features.append(_feature(str(name), mlflow_type))
            column_types[str(name)] = mlflow_type
    task: Task | None = None
    outputs = signature.outputs
    if outputs is not None and len(outputs.inputs) == 1:
        output = outputs.inputs[0]
        if outputs.is_tensor_spec():
            labels = np.dtype(output.type).kind in "iubUSO"
        else:
            labels = getattr(output.type, "name", "") in _CLASS_TYPES
        task = "classification" if labels else "regression"
    return Signature(tuple(features), task, ("predict",)), column_types


def _feature(name: str, mlflow_type: str) -> Feature:
    kind: FeatureKind
    if mlflow_type == "string":
        kind, dtype = "categorical", "string"
    elif mlflow_type == "boolean":
        kind, dtype = "boolean", "bool"
    elif mlflow_type in _NUMERIC_TYPES:
        kind, dtype = "numeric", "float64"
    else:
        raise ArtifactError(
            f"the MLmodel signature's column {name!r} is of type {mlflow_type}, which mlserve "
            "does not serve (it serves numbers, booleans and strings)"
        )
    return Feature(name=name, dtype=dtype, kind=kind)


def _tensor_features(tensors: list[Any]) -> list[Feature]:
    """Features f0..f{n-1} of a single numeric ``(-1, n)`` tensor input."""
    shape = tuple(tensors[0].shape) if len(tensors) == 1 else ()
    if len(shape) != 2 or shape[1] < 1 or np.dtype(tensors[0].type).kind not in "fiub":
        raise ArtifactError(
            "the MLmodel signature is not one table of columns nor one (rows, features) numeric "
            "tensor; mlserve serves tabular models"
        )
    return [Feature(name=n, dtype="float64") for n in default_feature_names(int(shape[1]))]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _refuse_when_safe(safe: bool) -> None:
    if safe:
        raise UnsafeArtifact(
            "MLflow pyfunc models unpickle objects and run their own code; safe loading refuses "
            "them (a scikit-learn flavour saved as skops, imported for its native runtime, "
            "loads safely)"
        )
