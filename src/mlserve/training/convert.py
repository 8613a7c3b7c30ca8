"""`mlserve convert REF --to onnx`: a registered model as ONNX, checked, as the next version.

The rule: a converted model is registered only when it answers like its source. Both predict
the version's reference sample (the training rows its reference profile keeps; rows made from
the signature when it has none): a classifier must give the same class on every row and
probabilities within PROBA_TOLERANCE, a regressor values within it (relative to values above
1). Otherwise nothing is registered and the error names the worst row.

scikit-learn models (pipelines as `mlserve train` builds them: impute, scale, one-hot encode)
convert with skl2onnx; XGBoost's and LightGBM's, bare, in a pipeline or as native boosters,
with onnxmltools' converters. Inputs are float32: onnxruntime has no float64 Imputer, and
scikit-learn's trees compare float32 values anyway; the parity check decides whether that was
close enough. A model fitted on named columns gets one input per feature (text for
categoricals), any other one 2-D tensor. The ONNX file carries the source's signature and
class labels in its metadata, so registering it keeps them; the new version also keeps the
source's reference profile and data fingerprint, and its tags name the source.
"""

from __future__ import annotations

import copy
import importlib
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlserve.errors import InvalidInput, MissingExtra
from mlserve.runtimes import SklearnRuntime, load_runtime, load_sklearn, runtime_class
from mlserve.training.registration import Registration, register_model
from mlserve.types import Signature, VersionManifest

if TYPE_CHECKING:
    from mlserve.registry import ModelVersion, RegistryStore
    from mlserve.runtimes import Runtime

PROBA_TOLERANCE = 1e-5
"""Largest difference allowed between the source's and the ONNX model's answers."""
MADE_ROWS = 200
"""Rows made from the signature when the source keeps no reference sample."""
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}
"""ONNX operator sets the converted models use: what onnxmltools' converters support (not
ai.onnx.ml 5, which skl2onnx would pick for trees, nor opsets past 15), long supported by
onnxruntime."""
_CONVERTIBLE = ("sklearn", "xgboost", "lightgbm")


@dataclass(frozen=True, slots=True)
class Conversion:
    """A registered conversion: the source, the new version and how close their answers are."""

    source: ModelVersion
    version: ModelVersion
    rows_checked: int
    largest_difference: float
    """Largest difference over the rows checked, of what ``compared`` names."""
    compared: str
    """``probability`` (a classifier) or ``relative value`` (a regressor)."""


def convert_to_onnx(
    store: RegistryStore, ref: str, *, safe: bool, alias: str | None = None, actor: str = ""
) -> Conversion:
    """Convert the version ``ref`` names to ONNX, check it, register it as the next version.

    Raises MissingExtra when the converters are not installed, InvalidInput when the model
    cannot be converted (naming the estimator) or the ONNX model answers differently.
    """
    source = store.resolve(ref)
    if source.framework not in _CONVERTIBLE:
        raise InvalidInput(
            f"cannot convert {source.name}:{source.version}: its framework is {source.framework}; "
            f"conversion to ONNX takes {', '.join(_CONVERTIBLE)} models"
        )
    _require("onnx", "onnxruntime", "skl2onnx")
    folder = store.local_folder(source)
    original = load_runtime(folder, expected_sha256=source.sha256, safe=safe)
    model = _model_object(source, folder / source.model_file, original, safe=safe)
    onnx_bytes = onnx_model_bytes(model, source.signature, list(original.classes))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_bytes)
        manifest = VersionManifest(
            name=source.name,
            version=0,
            framework="onnx",
            model_file=path.name,
            sha256="",
            signature=source.signature,
            created_at="",
        )
        converted = runtime_class("onnx").load(Path(tmp), manifest, safe=safe)
        rows = parity_rows(source)
        largest, compared = check_parity(original, converted, rows)
        request = Registration(
            name=source.name,
            framework="onnx",
            alias=alias,
            description=f"{source.name}:{source.version} converted to ONNX by mlserve convert",
            tags={
                "converted_from": f"{source.name}:{source.version}",
                "converted_by": "mlserve convert",
                "source_framework": source.framework,
            },
            params=source.params,
            data_fingerprint=source.data_fingerprint,
            reference_profile=source.reference_profile,
        )
        version = register_model(store, path, request, safe=safe, actor=actor)
    return Conversion(source, version, len(rows), largest, compared)


def onnx_model_bytes(model: Any, signature: Signature, classes: list[Any]) -> bytes:
    """``model`` (a scikit-learn estimator or pipeline, an XGBoost or LightGBM model or
    booster) as a serialized ONNX model carrying ``signature`` and ``classes``.

    Raises InvalidInput naming the step or estimator no converter takes.
    """
    import onnx

    from mlserve.runtimes.onnx import CLASSES_KEY, SIGNATURE_KEY

    package = type(model).__module__.split(".", 1)[0]
    with warnings.catch_warnings():
        # skl2onnx builds attributes from numpy booleans; protobuf warns it will refuse them
        # one day. The model it writes is what onnxruntime then runs and the parity check tests.
        warnings.filterwarnings("ignore", message=r"Field onnx\.AttributeProto\.ints")
        if package in ("xgboost", "lightgbm") and "Booster" in type(model).__name__:
            proto = _convert_booster(_prepared(model), package, len(signature.inputs))
        else:
            proto = _convert_sklearn(model, signature)
    onnx.helper.set_model_props(
        proto,
        {
            SIGNATURE_KEY: json.dumps(signature.to_dict()),
            CLASSES_KEY: json.dumps([_plain(c) for c in classes]),
        },
    )
    data: bytes = proto.SerializeToString()
    return data


def parity_rows(source: ModelVersion) -> pd.DataFrame:
    """The rows both models predict: the reference sample, else MADE_ROWS made from the
    signature (numbers around 0, categories in turn); typed as serving types them."""
    signature = source.signature
    names = signature.feature_names
    sample = (source.reference_profile or {}).get("sample") or {}
    rows = sample.get("rows") or []
    if rows and all(n in sample.get("columns", ()) for n in names):
        frame = pd.DataFrame(rows, columns=sample["columns"])[names]
    else:
        rng = np.random.default_rng(0)
        made: dict[str, Any] = {}
        for feature in signature.inputs:
            if feature.kind == "categorical":
                seen = feature.categories or ("a", "b", "c")
                made[feature.name] = [seen[i % len(seen)] for i in range(MADE_ROWS)]
            elif feature.kind == "boolean":
                made[feature.name] = rng.integers(0, 2, MADE_ROWS).astype(np.float64)
            else:
                made[feature.name] = rng.normal(size=MADE_ROWS)
        frame = pd.DataFrame(made, columns=names)
    for feature in signature.inputs:
        column = frame[feature.name]
        if feature.kind == "categorical":
            frame[feature.name] = column.map(lambda v: np.nan if pd.isna(v) else str(v)).astype(
                object
            )
        else:
            frame[feature.name] = pd.to_numeric(column, errors="coerce").astype(np.float64)
    return frame


def check_parity(original: Runtime, converted: Runtime, rows: pd.DataFrame) -> tuple[float, str]:
    """The largest difference between the two models' answers on ``rows`` and what it is of
    (``probability`` or ``relative value``); raises
    InvalidInput naming the worst row when a class differs or a difference exceeds
    PROBA_TOLERANCE."""
    if original.has_proba and original.classes:
        if [_plain(c) for c in converted.classes] != [_plain(c) for c in original.classes]:
            raise InvalidInput(
                f"the ONNX model's classes {converted.classes} differ from the original's "
                f"{original.classes}; not registered"
            )
        labels, proba = original.predict_with_proba(rows)
        onnx_labels, onnx_proba = converted.predict_with_proba(rows)
        for row, (want, got) in enumerate(zip(labels, onnx_labels, strict=True)):
            if _plain(want) != _plain(got):
                raise InvalidInput(
                    f"the ONNX model answers differently: row {row} of {len(rows)} is "
                    f"{_plain(want)!r} for the original and {_plain(got)!r} for ONNX; "
                    "not registered"
                )
        differences = np.abs(np.asarray(proba, dtype=np.float64) - onnx_proba).max(axis=1)
        what = "probability"
    else:
        want_values = np.asarray(original.predict(rows), dtype=np.float64)
        got_values = np.asarray(converted.predict(rows), dtype=np.float64)
        differences = np.abs(want_values - got_values) / np.maximum(1.0, np.abs(want_values))
        what = "relative value"
    if not len(differences):
        return 0.0, what
    worst = int(np.nanargmax(differences)) if not np.isnan(differences).all() else 0
    largest = float(differences[worst])
    if not largest <= PROBA_TOLERANCE:
        raise InvalidInput(
            f"the ONNX model answers differently: on row {worst} of {len(rows)} its {what} "
            f"differs by {largest:.3g} (at most {PROBA_TOLERANCE:g} allowed); not registered"
        )
    return largest, what


def _require(*packages: str) -> None:
    """Raise MissingExtra naming the convert extra when one of ``packages`` is missing."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingExtra(
                f"converting to ONNX needs the {package} package: pip install 'mlserve[convert]'"
            ) from None


def _model_object(source: ModelVersion, path: Path, original: Runtime, *, safe: bool) -> Any:
    """What the converters take: the estimator a scikit-learn runtime holds, else the file's
    booster (native format) or estimator (pickle)."""
    if isinstance(original, SklearnRuntime):
        return original.estimator
    _require("onnxmltools")
    if path.suffix.lower() in (".joblib", ".pkl", ".pickle", ".skops"):
        return load_sklearn(path, safe=safe)
    if source.framework == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster
    import lightgbm

    return lightgbm.Booster(model_file=str(path))


def _convert_booster(booster: Any, package: str, n_features: int) -> Any:
    """A native XGBoost or LightGBM booster through onnxmltools, with one 2-D float input."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    inputs = [("input", FloatTensorType([None, n_features]))]
    try:
        if package == "xgboost":
            return onnxmltools.convert_xgboost(
                booster, initial_types=inputs, target_opset=TARGET_OPSET[""]
            )
        return onnxmltools.convert_lightgbm(
            booster, initial_types=inputs, zipmap=False, target_opset=TARGET_OPSET[""]
        )
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot convert the {package} booster: {_first_line(exc)}") from None


def _convert_sklearn(model: Any, signature: Signature) -> Any:
    """A scikit-learn-API model through skl2onnx, onnxmltools' converters registered for the
    XGBoost and LightGBM estimators it holds."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    steps = list(_walk("model", model))
    packages = {type(step).__module__.split(".", 1)[0] for _, step in steps}
    for package in ("xgboost", "lightgbm"):
        if package in packages:
            _require("onnxmltools")
            _register_booster_converters(package)
    names = getattr(model, "feature_names_in_", None)
    if names is not None and any(_picks_columns(step) for _, step in steps):
        kinds = {f.name: f.kind for f in signature.inputs}
        inputs: list[tuple[str, Any]] = [
            (
                str(name),
                StringTensorType([None, 1])
                if kinds.get(str(name)) == "categorical"
                else FloatTensorType([None, 1]),
            )
            for name in names
        ]
    else:
        inputs = [("input", FloatTensorType([None, len(signature.inputs)]))]
    prepared = _prepared(model)
    options = {id(step): {"zipmap": False} for _, step in _walk("model", prepared)}
    options = {k: v for k, v in options.items() if _is_classifier(k, prepared)}
    try:
        return convert_sklearn(
            prepared, initial_types=inputs, options=options, target_opset=TARGET_OPSET
        )
    except (MissingShapeCalculator, MissingConverter) as exc:
        message = str(exc)
        for where, step in steps:
            kind = type(step).__name__
            if f".{kind}'" in message or f" {kind}'" in message or f"'{kind}'" in message:
                raise InvalidInput(
                    f"cannot convert step {where!r} ({kind}): skl2onnx has no converter for it"
                ) from None
        raise InvalidInput(f"cannot convert {type(model).__name__}: {_first_line(exc)}") from None
    except (RuntimeError, NotImplementedError, ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(
            f"cannot convert {type(model).__name__}: skl2onnx says {_first_line(exc)}"
        ) from None


def _walk(name: str, step: Any) -> list[tuple[str, Any]]:
    """``step`` and every estimator inside it (pipelines, column transformers, unions), each
    with the step name that reaches it."""
    found = [(name, step)]
    inner: list[tuple[str, Any]] = []
    if hasattr(step, "steps"):
        inner = list(step.steps)
    elif hasattr(step, "transformers_"):
        inner = [(n, t) for n, t, _ in step.transformers_]
    elif hasattr(step, "transformer_list"):
        inner = list(step.transformer_list)
    for child_name, child in inner:
        if not isinstance(child, str):
            found.extend(_walk(child_name, child))
    return found


def _picks_columns(step: Any) -> bool:
    """True for a step that selects its columns by name (a column transformer): the ONNX
    model then takes one input per feature, named after it."""
    return hasattr(step, "transformers_")


def _is_classifier(step_id: int, model: Any) -> bool:
    step = next(s for _, s in _walk("model", model) if id(s) == step_id)
    return hasattr(step, "classes_") and hasattr(step, "predict_proba")


def _prepared(model: Any) -> Any:
    """A copy of ``model`` as the converters take it, or ``model`` when it needs no change.

    Text imputers treat "" as missing: ONNX text tensors hold no NaN, so the ONNX runtime
    feeds a missing category as "" (skl2onnx refuses a text imputer whose missing value is
    NaN). XGBoost boosters forget their feature names: onnxmltools reads features only as
    f0, f1, … (the ONNX model takes them in signature order all the same).
    """
    if not any(_needs_change(s) for _, s in _walk("model", model)):
        return model
    prepared = copy.deepcopy(model)
    for _, step in _walk("model", prepared):
        if _is_text_imputer(step):
            step.missing_values = ""
        elif _named_xgboost(step) is not None:
            _named_xgboost(step).feature_names = None
    return prepared


def _needs_change(step: Any) -> bool:
    return _is_text_imputer(step) or _named_xgboost(step) is not None


def _named_xgboost(step: Any) -> Any:
    """The booster of an XGBoost estimator or booster that names its features, else None."""
    if type(step).__module__.split(".", 1)[0] != "xgboost":
        return None
    booster = step.get_booster() if hasattr(step, "get_booster") else step
    return booster if getattr(booster, "feature_names", None) else None


def _is_text_imputer(step: Any) -> bool:
    from sklearn.impute import SimpleImputer

    statistics = getattr(step, "statistics_", None)
    return (
        isinstance(step, SimpleImputer)
        and statistics is not None
        and statistics.dtype == object
        and isinstance(step.missing_values, float)
    )


def _register_booster_converters(package: str) -> None:
    """Teach skl2onnx onnxmltools' converters for XGBoost's or LightGBM's estimators."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    if package == "xgboost":
        import xgboost
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

        update_registered_converter(
            xgboost.XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=classifier_options,
        )
        update_registered_converter(
            xgboost.XGBRegressor,
            "XGBoostXGBRegressor",
            calculate_linear_regressor_output_shapes,
            convert_xgboost,
        )
        return
    import lightgbm
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    update_registered_converter(
        lightgbm.LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options=classifier_options,
    )
    update_registered_converter(
        lightgbm.LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
