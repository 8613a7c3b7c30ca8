"""Registering a model someone else trained: the one path `mlserve register`, `mlserve import`,
`mlserve convert` and the Python SDK share.

The framework comes from the caller or from the file (:func:`mlserve.runtimes.detect_framework`);
the framework's runtime says what the model records about itself (feature names, classes, a
whole signature for an MLflow model); data given with ``signature_from`` adds feature dtypes
and kinds, the reference profile and the data fingerprint.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlserve.errors import InvalidInput
from mlserve.monitoring import build_reference_profile, describe_features, fingerprint_frame
from mlserve.registry import NewVersion
from mlserve.runtimes import (
    ModelFacts,
    detect_framework,
    load_sklearn,
    pack_folder,
    pickled_framework,
    runtime_class,
)
from mlserve.runtimes.loader import RUNTIMES
from mlserve.training.data import read_dataset
from mlserve.types import Feature, Signature, Task, default_feature_names

if TYPE_CHECKING:
    from mlserve.registry import ModelVersion, RegistryStore


@dataclass(frozen=True, slots=True)
class Registration:
    """What to record beside the model file."""

    name: str
    framework: str | None = None
    """None: judged from the file."""
    signature_from: Path | pd.DataFrame | None = None
    target: str | None = None
    alias: str | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    """Kept as given (a converted model keeps its source's); None: from ``signature_from``."""
    reference_profile: dict[str, Any] | None = None
    """Kept as given (a converted model keeps its source's); None: from ``signature_from``."""
    facts: ModelFacts | None = None
    """What the model says about itself, when the caller read it from elsewhere (an imported
    MLflow model's signature around its inner model file); None: the runtime inspects it."""


def register_model(
    store: RegistryStore, path: Path, request: Registration, *, safe: bool, actor: str = ""
) -> ModelVersion:
    """Register the model file or folder at ``path`` as the next version of ``request.name``.

    A folder (MLflow model, custom Python model) is stored as one zip of its files. Raises
    InvalidInput for a missing file, an unknown framework or data that does not fit the model,
    MissingExtra when the framework's packages are not installed, UnsafeArtifact when ``safe``
    refuses the file.
    """
    if not path.exists():
        raise InvalidInput(f"{path}: no such model file or folder")
    framework = request.framework or _framework_of(path, safe=safe)
    if framework not in RUNTIMES:
        raise InvalidInput(f"unknown framework {framework!r}; known: {', '.join(sorted(RUNTIMES))}")
    facts = request.facts or runtime_class(framework).inspect(path, safe=safe)
    described = describe_version(facts, request.signature_from, request.target)
    new = NewVersion(
        framework=framework,
        signature=described.signature,
        metrics=request.metrics,
        params=request.params,
        tags=request.tags,
        description=request.description,
        data_fingerprint=request.data_fingerprint or described.data_fingerprint,
        reference_profile=request.reference_profile or described.reference_profile,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_file = path
        if path.is_dir():
            model_file = pack_folder(path, Path(tmp) / f"{framework}-model.zip")
        version = store.register_version(request.name, model_file, new, actor=actor)
    if request.alias:
        store.set_alias(request.name, request.alias, version.version, actor=actor)
    return version


def _framework_of(path: Path, *, safe: bool) -> str:
    framework = detect_framework(path)
    if framework == "sklearn" and path.suffix != ".skops" and not safe:
        # A pickled XGBoost or LightGBM scikit-learn model is served by its own runtime.
        return pickled_framework(load_sklearn(path, safe=safe))
    return framework


def describe_version(
    facts: ModelFacts, data: Path | pd.DataFrame | None, target: str | None
) -> NewVersion:
    """Signature (and, with data, reference profile and fingerprint) of a model; the returned
    version's framework is left empty for the caller."""
    if facts.signature is not None and data is None:
        example = facts.input_example
        # The model's input example is the only data there is: a (small) reference profile.
        profile = None if example is None else build_reference_profile(example)
        return NewVersion(framework="", signature=facts.signature, reference_profile=profile)
    task: Task = "classification" if facts.classes else "regression"
    outputs = ("predict", "predict_proba") if facts.has_proba else ("predict",)
    if data is None:
        names = facts.feature_names
        if names is None:
            if facts.n_features is None:
                raise InvalidInput(
                    "the model does not say how many features it takes; use --signature-from"
                )
            names = tuple(default_feature_names(facts.n_features))
        inputs = tuple(Feature(name=n, dtype="float64") for n in names)
        return NewVersion(
            framework="", signature=Signature(inputs, task, outputs, facts.classes, target)
        )
    frame = _feature_frame(facts, data, target)
    if facts.signature is not None:
        signature = facts.signature
        known = {f.name: f for f in describe_features(frame)}
        # The model's own names and order; the data's dtypes and categories where it has them.
        inputs = tuple(known.get(f.name, f) for f in signature.inputs)
        signature = Signature(
            inputs, signature.task, signature.outputs, signature.classes, target or signature.target
        )
    else:
        signature = Signature(describe_features(frame), task, outputs, facts.classes, target)
    return NewVersion(
        framework="",
        signature=signature,
        data_fingerprint=fingerprint_frame(frame),
        reference_profile=build_reference_profile(frame),
    )


def _feature_frame(
    facts: ModelFacts, data: Path | pd.DataFrame, target: str | None
) -> pd.DataFrame:
    """The data's feature columns, in the model's order when it names them."""
    where = str(data) if isinstance(data, Path) else "the data"
    frame = read_dataset(data) if isinstance(data, Path) else data
    if target is not None:
        if target not in frame.columns:
            raise InvalidInput(f"{where}: target column {target!r} not found")
        frame = frame.drop(columns=[target])
    names = facts.feature_names
    if facts.signature is not None:
        names = tuple(facts.signature.feature_names)
    expected = len(names) if names is not None else facts.n_features
    if expected is not None and frame.shape[1] != expected:
        raise InvalidInput(
            f"{where} has {frame.shape[1]} feature columns but the model takes {expected}"
        )
    if names is None:
        return frame
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise InvalidInput(f"{where} lacks the model's feature(s): {', '.join(missing)}")
    return frame[list(names)]
