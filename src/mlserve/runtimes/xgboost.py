"""XGBoost runtime: JSON and UBJSON model files, and scikit-learn-API models saved with joblib.

Predictions go through the booster itself (``inplace_predict``, no DMatrix per call), with what
XGBoost's scikit-learn API adds written out here as it does it, so the answers are its answers
bit for bit: a binary:logistic classifier's class is 1 when P(1) > 0.5 and its probabilities are
the columns [1 - p, p]; multi:softprob's class is the most probable one; multi:softmax's class is
the booster's and its probabilities the softmax of its margins. A model that recorded a best
iteration (early stopping) predicts with the trees up to it, as the scikit-learn API does.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xgboost as xgb
from scipy.special import softmax

from mlserve.errors import ArtifactError, InvalidInput
from mlserve.runtimes.base import Batch, ModelFacts
from mlserve.runtimes.numeric import booster_names, numeric_matrix
from mlserve.runtimes.sklearn import PICKLE_SUFFIXES, load_sklearn, plain
from mlserve.types import Signature, VersionManifest

SERVING_THREADS = 1
"""Threads the booster uses for one call. Serving already runs requests on several workers and
batch jobs score blocks of rows on several threads, so threads inside a call compete with
them. Measured on a shared 2-core machine (100 trees of depth 6, 20 features, binary): one row
took 187 µs on 1 thread and 237 µs on 2; 100 rows 372 µs on 1 and 272 µs on 2 with nothing
else running, but two workers predicting 100 rows at once made 2,725 calls/s on 1 thread each
and 1,491 on 2 each."""

PROBABILITY_OBJECTIVES = frozenset({"binary:logistic", "multi:softprob", "multi:softmax"})
"""Objectives whose model is a classifier with class probabilities."""

_LOG_PREFIX = re.compile(r"^\[[\d:]+\] [^:]+:\d+: ")
"""What XGBoost puts before its own error messages: ``[17:08:05] src/file.cc:144: ``."""


@dataclass(frozen=True, slots=True)
class XGBoostModel:
    """A booster ready for serving and how its outputs read."""

    booster: Any
    """The xgboost.Booster, its thread count set to SERVING_THREADS."""
    objective: str
    is_linear: bool
    """True for a gblinear booster (no inplace prediction, not thread-safe)."""
    classes: tuple[Any, ...]
    """Class labels in probability column order; empty for any other objective."""
    iteration_range: tuple[int, int]
    missing: float
    feature_names: tuple[str, ...] | None
    n_features: int


def read_xgboost(path: Path, *, safe: bool) -> XGBoostModel:
    """Load a booster file (.json, .ubj), or an XGBoost scikit-learn model pickle (refused when
    ``safe``). Raises ArtifactError when unreadable or not XGBoost's, UnsafeArtifact when
    ``safe`` refuses it."""
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder, not an XGBoost model file")
    missing = np.nan
    labels: tuple[Any, ...] | None = None
    if path.suffix.lower() in PICKLE_SUFFIXES:
        estimator = load_sklearn(path, safe=safe)
        if not isinstance(estimator, xgb.XGBModel):
            raise ArtifactError(
                f"{path.name} holds a {type(estimator).__name__}, not an XGBoost scikit-learn model"
            )
        try:
            booster = estimator.get_booster()
        except Exception as exc:  # NotFittedError, or a wrapper pickled half-built
            raise ArtifactError(f"{path.name}: {_first_line(exc)}") from None
        missing = np.nan if estimator.missing is None else float(estimator.missing)
        # A scikit-learn regressor stays one whatever its objective (binary:logistic included).
        is_classifier = isinstance(estimator, xgb.XGBClassifier)
        labels = tuple(plain(c) for c in estimator.classes_) if is_classifier else ()
    else:
        try:
            booster = xgb.Booster(model_file=str(path))
        except xgb.core.XGBoostError as exc:
            raise ArtifactError(f"cannot load {path.name}: {_first_line(exc)}") from None
    return _describe(booster, path.name, missing, labels)


def _describe(
    booster: Any, file_name: str, missing: float, labels: tuple[Any, ...] | None
) -> XGBoostModel:
    """What the booster's configuration says; sets its thread count for serving. ``labels``
    are a scikit-learn model's classes (empty for its regressors), None for a bare booster."""
    types = booster.feature_types or ()
    if any(t == "c" for t in types):
        raise ArtifactError(
            f"{file_name} has categorical features, which the xgboost runtime does not take"
        )
    booster.set_param({"nthread": SERVING_THREADS})
    learner = json.loads(booster.save_config())["learner"]
    objective = str(learner["objective"]["name"])
    params = learner["learner_model_param"]
    is_linear = learner["gradient_booster"]["name"] == "gblinear"
    classes: tuple[Any, ...] = ()
    if (
        objective in PROBABILITY_OBJECTIVES
        and int(params.get("num_target", 1)) == 1
        and labels != ()
    ):
        count = max(int(params.get("num_class", 0)), 2)
        classes = labels if labels is not None else tuple(range(count))
    best = booster.attr("best_iteration")
    names = booster.feature_names
    return XGBoostModel(
        booster=booster,
        objective=objective,
        is_linear=is_linear,
        classes=classes,
        iteration_range=(0, int(best) + 1) if best is not None and not is_linear else (0, 0),
        missing=missing,
        feature_names=None if names is None else tuple(str(n) for n in names),
        n_features=int(booster.num_features()),
    )


def _first_line(exc: BaseException) -> str:
    """XGBoost's message without its timestamp, source line and stack trace."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return _LOG_PREFIX.sub("", line)


class XGBoostRuntime:
    """An XGBoost booster; thread-safe for prediction (tree boosters predict in place, which
    XGBoost makes thread-safe; a linear booster predicts under a lock)."""

    framework: ClassVar[str] = "xgboost"
    needs_process: ClassVar[bool] = False

    def __init__(self, model: XGBoostModel, signature: Signature) -> None:
        """Serve ``model`` under ``signature``; raises ArtifactError when they do not fit."""
        self._model = model
        self.signature = signature
        self._names = booster_names(signature, "XGBoost", model.n_features, model.feature_names)
        self._classes: list[object] = list(model.classes)
        self._labels = np.asarray(self._classes)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> XGBoostRuntime:
        """Load the model file of a verified version folder."""
        return cls(read_xgboost(folder / manifest.model_file, safe=safe), manifest.signature)

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """Feature names (when the booster has them) and count, classes and probabilities."""
        model = read_xgboost(path, safe=safe)
        return ModelFacts(
            feature_names=model.feature_names,
            n_features=model.n_features,
            classes=model.classes,
            has_proba=bool(model.classes),
        )

    @property
    def has_proba(self) -> bool:
        """True for a classifier objective (binary:logistic, multi:softprob, multi:softmax)."""
        return bool(self._classes)

    @property
    def classes(self) -> list[object]:
        """Class labels in ``predict_proba`` column order (empty for other objectives)."""
        return self._classes

    @property
    def scales_with_threads(self) -> bool:
        """True for tree boosters: each row's answer is the same bits whatever rows share the
        call (checked with NaN cells, blocks against the whole), and inplace prediction runs
        in compiled code without the GIL. Not for a linear booster, which predicts under a
        lock."""
        return not self._model.is_linear

    def predict(self, batch: Batch) -> np.ndarray:
        """The class of each row for a classifier, else the booster's value."""
        if not self._classes:
            values = self._output(numeric_matrix(batch, self._names), margin=False)
            return values.astype(np.float64)  # exact: float32 widens without rounding
        if self._model.objective == "multi:softmax":
            rows = numeric_matrix(batch, self._names)
            return self._labels[self._output(rows, margin=False).astype(np.intp)]
        return self.predict_with_proba(batch)[0]

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Class probabilities; raises InvalidInput when the objective gives none."""
        if not self._classes:
            raise InvalidInput(
                f"this model does not give probabilities (objective {self._model.objective})"
            )
        rows = numeric_matrix(batch, self._names)
        if self._model.objective == "multi:softmax":
            probabilities = softmax(self._output(rows, margin=True), axis=1)
            return np.asarray(probabilities, dtype=np.float64)
        values = self._output(rows, margin=False)
        if values.ndim == 1:
            # As XGBClassifier.predict_proba: P(0) is 1 - P(1) in the booster's float32.
            values = np.vstack((1.0 - values, values)).T
        return np.ascontiguousarray(values, dtype=np.float64)

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Classes and probabilities from one prediction (two for multi:softmax, whose class
        is the booster's own); raises InvalidInput when the objective gives no probabilities."""
        if self._model.objective == "multi:softmax":
            return self.predict(batch), self.predict_proba(batch)
        probabilities = self.predict_proba(batch)
        if self._model.objective == "binary:logistic":
            indices = (probabilities[:, 1] > 0.5).astype(np.intp)
        else:
            indices = np.argmax(probabilities, axis=1)
        return self._labels[indices], probabilities

    def _output(self, rows: np.ndarray, *, margin: bool) -> np.ndarray:
        """The booster's values (or margins) for float64 rows in signature order."""
        model = self._model
        try:
            if model.is_linear:
                data = xgb.DMatrix(rows, missing=model.missing, nthread=SERVING_THREADS)
                with self._lock:
                    values = model.booster.predict(
                        data, output_margin=margin, validate_features=False
                    )
            else:
                values = model.booster.inplace_predict(
                    rows,
                    iteration_range=model.iteration_range,
                    predict_type="margin" if margin else "value",
                    missing=model.missing,
                    validate_features=False,
                )
        except xgb.core.XGBoostError as exc:
            raise InvalidInput(f"the XGBoost model refused the rows: {_first_line(exc)}") from None
        return np.asarray(values)
