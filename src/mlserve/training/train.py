"""Train a scikit-learn baseline on a dataset, compare it with a trivial model, register it."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.errors import (
    Conflict,
    DatasetError,
    InvalidInput,
    ModelNotFound,
    NotBetterThanBaseline,
)
from mlserve.monitoring import build_reference_profile, describe_features, fingerprint_frame
from mlserve.registry import ModelVersion, NewVersion, RegistryStore, TrainingRun
from mlserve.runtimes import dump_sklearn
from mlserve.training.data import read_dataset
from mlserve.training.evaluate import DECIDING_METRIC, baseline_estimator, evaluate, is_better
from mlserve.training.validate import ValidationReport, clean_dataset, validate_dataset
from mlserve.types import Signature, Task, current_actor

EstimatorFactory = Callable[[int], Any]

ESTIMATORS: dict[str, dict[str, EstimatorFactory]] = {
    "classification": {
        "logistic_regression": lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
        "random_forest": lambda seed: RandomForestClassifier(n_estimators=100, random_state=seed),
        "gradient_boosting": lambda seed: HistGradientBoostingClassifier(random_state=seed),
        "knn": lambda seed: KNeighborsClassifier(),
    },
    "regression": {
        "linear_regression": lambda seed: LinearRegression(),
        "ridge": lambda seed: Ridge(random_state=seed),
        "random_forest": lambda seed: RandomForestRegressor(n_estimators=100, random_state=seed),
        "gradient_boosting": lambda seed: HistGradientBoostingRegressor(random_state=seed),
        "knn": lambda seed: KNeighborsRegressor(),
    },
}
DEFAULT_ESTIMATOR: dict[str, str] = {"classification": "logistic_regression", "regression": "ridge"}
ALL_ESTIMATORS = sorted({name for table in ESTIMATORS.values() for name in table})
MAX_ONE_HOT_CATEGORIES = 50


@dataclass(frozen=True, slots=True)
class TrainRequest:
    """Everything `mlserve train` was asked to do."""

    data: Path | pd.DataFrame
    """A CSV or Parquet file, or (from the Python SDK) the frame itself."""
    target: str
    name: str | None = None
    estimator: str | None = None
    task: Task | None = None
    test_size: float = 0.2
    seed: int = 0
    alias: str | None = None
    drop: tuple[str, ...] = ()
    model_format: Literal["joblib", "skops"] = "joblib"
    description: str = ""
    require_better: bool = False
    """Refuse to register a model that does not beat the trivial baseline."""


@dataclass(slots=True)
class TrainResult:
    """What training produced: the registered version, its metrics and the baseline's."""

    version: ModelVersion
    report: ValidationReport
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    rows_train: int
    rows_test: int
    duration_s: float
    run: TrainingRun | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def beats_baseline(self) -> bool:
        """True when the model beats the trivial baseline on the deciding metric."""
        metric = DECIDING_METRIC[self.report.task or "classification"]
        return is_better(metric, self.metrics[metric], self.baseline_metrics[metric])


def _data_label(request: TrainRequest) -> str:
    """The data as runs record and errors name it: its path, or that it was a frame in memory."""
    if isinstance(request.data, pd.DataFrame):
        return f"a DataFrame of {len(request.data)} rows"
    return str(request.data)


def load_training_frame(request: TrainRequest) -> tuple[pd.DataFrame, ValidationReport]:
    """Read and validate; raises DatasetError listing every blocking problem at once."""
    frame = (
        request.data.copy()
        if isinstance(request.data, pd.DataFrame)
        else read_dataset(request.data)
    )
    unknown = [c for c in request.drop if c not in frame.columns]
    if unknown:
        raise DatasetError(f"--drop names unknown column(s): {', '.join(unknown)}")
    frame = frame.drop(columns=list(request.drop))
    report = validate_dataset(frame, request.target, request.task)
    if report.errors:
        raise DatasetError(
            f"{_data_label(request)} cannot be trained on: {len(report.errors)} problem(s)",
            [p.message for p in report.errors],
        )
    return frame, report


def build_pipeline(features: pd.DataFrame, estimator: Any) -> Pipeline:
    """Impute, scale and one-hot encode raw columns, then the estimator: serving takes raw rows."""
    kinds = {f.name: f.kind for f in describe_features(features)}
    numeric = [c for c, k in kinds.items() if k != "categorical"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline(
                    [
                        # A column with no value in the training rows stays (imputed as 0):
                        # serving sends it, and scikit-learn would drop it with a warning.
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                numeric,
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                        (
                            "encode",
                            OneHotEncoder(
                                handle_unknown="infrequent_if_exist",
                                max_categories=MAX_ONE_HOT_CATEGORIES,
                                sparse_output=False,
                            ),
                        ),
                    ]
                ),
                categorical,
            )
        )
    return Pipeline([("prepare", ColumnTransformer(transformers)), ("model", estimator)])


def normalize_features(features: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as Python strings (missing as NaN), booleans as floats, as serving does."""
    out = features.copy()
    for column in out.columns:
        series = out[column]
        if pd.api.types.is_bool_dtype(series):
            out[column] = series.astype(np.float64)
        elif not pd.api.types.is_numeric_dtype(series):
            out[column] = series.map(lambda v: np.nan if pd.isna(v) else str(v)).astype(object)
    return out


def train(
    store: RegistryStore, request: TrainRequest, on_step: Callable[[str], None] = lambda _: None
) -> TrainResult:
    """Validate, train, evaluate against a baseline, register and record the run."""
    started, clock = datetime.now(UTC), time.perf_counter()
    if request.name is None and isinstance(request.data, pd.DataFrame):
        raise InvalidInput("a model trained on a DataFrame needs a name")
    name = request.name or Path(str(request.data)).stem
    on_step("reading and validating data")
    frame, report = load_training_frame(request)
    _check_same_target(store, name, request.target)
    task: Task = report.task or "classification"
    estimator_name = request.estimator or DEFAULT_ESTIMATOR[task]
    factory = ESTIMATORS[task].get(estimator_name)
    if factory is None:
        raise InvalidInput(
            f"estimator {estimator_name!r} does not fit a {task} target; "
            f"choose one of: {', '.join(sorted(ESTIMATORS[task]))}"
        )
    if not 0 < request.test_size < 1:
        raise InvalidInput(f"--test-size must be between 0 and 1, got {request.test_size}")

    clean = clean_dataset(frame, request.target, report)
    y = clean[request.target]
    x = normalize_features(clean.drop(columns=[request.target]))
    stratify = y if task == "classification" else None
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=request.test_size, random_state=request.seed, stratify=stratify
        )
    except ValueError as exc:
        raise DatasetError(f"cannot split the data for testing: {exc}") from None

    on_step(f"training {estimator_name} on {len(x_train)} rows")
    model = build_pipeline(x_train, factory(request.seed)).fit(x_train, y_train)
    baseline = baseline_estimator(task).fit(x_train, y_train)
    on_step("evaluating on the held-out rows")
    metrics = evaluate(model, x_test, y_test, task)
    baseline_metrics = evaluate(baseline, x_test, y_test, task)
    deciding = DECIDING_METRIC[task]
    if request.require_better and not is_better(
        deciding, metrics[deciding], baseline_metrics[deciding]
    ):
        raise NotBetterThanBaseline(
            f"not registered: {estimator_name} does not beat the trivial baseline on "
            f"{deciding} ({metrics[deciding]:.4f} against {baseline_metrics[deciding]:.4f} "
            f"on {len(x_test)} held-out rows); is {request.target!r} the right target?"
        )

    on_step("registering the model")
    classes = tuple(_plain(c) for c in getattr(model, "classes_", ()))
    signature = Signature(
        inputs=describe_features(x),
        task=task,
        outputs=("predict", "predict_proba") if classes else ("predict",),
        classes=classes,
        target=request.target,
    )
    params = {
        "estimator": estimator_name,
        "test_size": request.test_size,
        "seed": request.seed,
        **{k: _plain(v) for k, v in factory(request.seed).get_params().items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_path = dump_sklearn(model, Path(tmp) / f"model.{request.model_format}")
        version = store.register_version(
            name,
            model_path,
            NewVersion(
                framework="sklearn",
                signature=signature,
                metrics=metrics,
                params=params,
                tags={"trained_by": "mlserve train", "estimator": estimator_name},
                description=request.description,
                data_fingerprint=fingerprint_frame(clean),
                reference_profile=build_reference_profile(x, seed=request.seed),
            ),
            actor=current_actor(),
        )
    if request.alias:
        store.set_alias(name, request.alias, version.version, actor=current_actor())
        version = store.get_version(name, version.version)
    duration = time.perf_counter() - clock
    run = store.record_run(
        name,
        TrainingRun(
            id=0,
            name=name,
            version=version.version,
            estimator=estimator_name,
            task=task,
            params=params,
            metrics=metrics,
            baseline_metrics=baseline_metrics,
            data_path=_data_label(request),
            data_fingerprint=version.data_fingerprint,
            rows_train=len(x_train),
            rows_test=len(x_test),
            duration_s=round(duration, 3),
            git_commit=git_commit(),
            started_at=started,
        ),
    )
    return TrainResult(
        version=version,
        report=report,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        rows_train=len(x_train),
        rows_test=len(x_test),
        duration_s=duration,
        run=run,
    )


def _check_same_target(store: RegistryStore, name: str, target: str) -> None:
    """Raise Conflict when ``name``'s latest version predicts another target: versions of one
    model must be interchangeable (an alias may move to any of them)."""
    try:
        latest = store.list_versions(name)
    except ModelNotFound:
        return
    previous = latest[-1].signature.target if latest else None
    if previous is not None and previous != target:
        raise Conflict(
            f"model {name!r} predicts {previous!r}; this run predicts {target!r}: "
            "give it another --name"
        )


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit when run inside a git repository, else None."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _plain(value: Any) -> Any:
    """A JSON-ready form of a parameter or label."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
