"""Register, load and train models in the registry the settings name, from Python.

Each call opens the registry `mlserve` would open in the same folder with the same environment
(``mlserve.yaml``, ``MLSERVE_*`` variables such as ``MLSERVE_HOME``, ``.env``), unless it is
handed other ``settings``, and closes it before returning. Registration and training go through
the same code as `mlserve register` and `mlserve train`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from mlserve.errors import InvalidInput
from mlserve.inputs import InputPolicy
from mlserve.registry import ModelVersion
from mlserve.registry.opening import open_registry
from mlserve.sdk.loaded import LoadedModel
from mlserve.sdk.saving import save_model
from mlserve.settings import Settings, load_settings
from mlserve.training import TrainRequest, TrainResult
from mlserve.training import train as run_training
from mlserve.training.registration import Registration, register_model
from mlserve.types import ModelRef, Task, current_actor


def register(
    model: Any,
    *,
    name: str,
    signature_from: pd.DataFrame | str | Path | None = None,
    target: str | None = None,
    alias: str | None = None,
    framework: str | None = None,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> ModelVersion:
    """Register ``model`` as the next version of ``name``, as `mlserve register` does.

    ``model`` is the path of a model file or folder (``str`` or ``Path``; the framework is
    judged from it unless ``framework`` is given), or a model in memory: a scikit-learn
    estimator or pipeline, an XGBoost or LightGBM model (their scikit-learn API or a native
    ``Booster``), or an ONNX ``ModelProto``.

    ``signature_from`` (a DataFrame, or the path of a CSV, Parquet or JSON file) gives the
    features' dtypes and categories, the reference profile for drift checks and the data
    fingerprint; ``target`` names its label column, left out of the features. ``alias`` then
    points at the new version. Returns the version as the registry records it.

    Raises InvalidInput for a missing file, an unknown framework or data that does not fit the
    model; MissingExtra when the framework's packages are not installed; UnsafeArtifact when
    safe loading refuses the file.
    """
    settings = settings or load_settings()
    store = open_registry(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="mlserve-register-") as tmp:
            path, judged = _model_path(model, Path(tmp), safe=settings.safe_loading)
            request = Registration(
                name=name,
                framework=framework or judged,
                signature_from=Path(signature_from)
                if isinstance(signature_from, str)
                else signature_from,
                target=target,
                alias=alias,
                description=description,
                tags=dict(tags or {}),
                metrics=dict(metrics or {}),
                params=dict(params or {}),
            )
            version = register_model(
                store, path, request, safe=settings.safe_loading, actor=current_actor()
            )
        # Read again: the alias was set after the version was written.
        return store.get_version(version.name, version.version) if alias else version
    finally:
        store.close()


def load(ref: str, *, settings: Settings | None = None) -> LoadedModel:
    """Load a registered version: ``"churn@production"``, ``"churn:3"``, or ``"churn"`` (the
    ``production`` alias when it is set, else the latest version).

    The version's files are fetched (from the artifact store, into the local cache) and
    checked against the sha256 recorded at registration; its input rules are the model's
    settings (``models.<name>.missing_values`` and friends), as the server's are.

    Raises NotFound for an unknown model, version or alias, ArtifactIntegrityError when the
    file changed after registration, MissingExtra when the framework's packages are not
    installed, UnsafeArtifact when safe loading refuses it.
    """
    settings = settings or load_settings()
    store = open_registry(settings)
    try:
        version = store.resolve(ModelRef.parse(ref))
        folder = store.local_folder(version)
    finally:
        store.close()
    policy = InputPolicy.from_rules(settings.input_rules_for(version.name))
    return LoadedModel.from_folder(version, folder, policy=policy, safe=settings.safe_loading)


def train(
    data: pd.DataFrame | str | Path,
    *,
    name: str,
    target: str,
    estimator: str | None = None,
    task: Task | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    alias: str | None = None,
    drop: Sequence[str] = (),
    model_format: Literal["joblib", "skops"] = "joblib",
    description: str = "",
    require_better: bool | None = None,
    settings: Settings | None = None,
) -> TrainResult:
    """Train a scikit-learn baseline on ``data`` and register it as the next version of
    ``name``, as `mlserve train` does (same defaults, same checks, same training run record).

    ``data`` is a DataFrame or the path of a CSV, Parquet or JSON file; ``target`` is the
    column to predict and ``drop`` lists columns to leave out. ``estimator`` is one of
    ``logistic_regression``, ``random_forest``, ``gradient_boosting``, ``knn``
    (classification) or ``linear_regression``, ``ridge``, ``random_forest``,
    ``gradient_boosting``, ``knn`` (regression); default ``logistic_regression`` or ``ridge``.
    ``task`` is inferred when None. ``require_better`` refuses to register a model that does not
    beat the trivial baseline (None: the ``train_require_better`` setting).

    Returns the registered version with its test metrics and the baseline's. Raises
    DatasetError listing every problem of the data, NotBetterThanBaseline, Conflict when
    ``name`` already predicts another target, InvalidInput for a bad argument.
    """
    settings = settings or load_settings()
    if task not in (None, "classification", "regression"):
        raise InvalidInput(f"task must be classification or regression, got {task!r}")
    if model_format not in ("joblib", "skops"):
        raise InvalidInput(f"model format must be joblib or skops, got {model_format!r}")
    store = open_registry(settings)
    try:
        request = TrainRequest(
            data=data if isinstance(data, pd.DataFrame) else Path(data),
            target=target,
            name=name,
            estimator=estimator,
            task=task,
            test_size=test_size,
            seed=seed,
            alias=alias,
            drop=(drop,) if isinstance(drop, str) else tuple(drop),
            model_format=model_format,
            description=description,
            require_better=(
                settings.train_require_better if require_better is None else require_better
            ),
        )
        return run_training(store, request)
    finally:
        store.close()


def _model_path(model: Any, folder: Path, *, safe: bool) -> tuple[Path, str | None]:
    """The file or folder to register, and its framework when known without reading it: a
    path as it is (its framework judged by registration), a model in memory saved in
    ``folder``."""
    if isinstance(model, str | Path):
        return Path(model), None
    saved = save_model(model, folder, safe=safe)
    return saved.path, saved.framework
