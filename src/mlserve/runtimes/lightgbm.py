"""LightGBM runtime: text model files, and scikit-learn-API models saved with joblib.

Predictions go through the booster itself, with what LightGBM's scikit-learn API adds written
out here as it does it, so the answers are its answers bit for bit: a binary classifier's
probabilities are the columns [1 - p, p], a multiclass one's the booster's, and the class is the
most probable one. A model that recorded a best iteration predicts with the trees up to it (the
booster's own default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from mlserve.errors import ArtifactError, InvalidInput
from mlserve.runtimes.base import Batch, ModelFacts
from mlserve.runtimes.numeric import booster_names, numeric_matrix
from mlserve.runtimes.sklearn import PICKLE_SUFFIXES, load_sklearn, plain
from mlserve.types import Signature, VersionManifest

SERVING_THREADS = 1
"""Threads the booster uses for one call (LightGBM keeps the last call's count process-wide;
every call here passes this one). Serving already runs requests on several workers and batch
jobs score blocks of rows on several threads, so threads inside a call compete with them.
Measured on a shared 2-core machine (100 trees, 20 features, binary): one row took 24 µs on 1
thread and 277 µs on 2; 100 rows 379 µs on 1 and 138 µs on 2 with nothing else running (two
workers at once: 1,381 calls/s on 1 thread each, 2,339 on 2), but single rows, the common
request, made 12,816 calls/s from two workers on 1 thread each against 8,766 on 2."""

CLASSIFIER_OBJECTIVES = frozenset({"binary", "multiclass", "multiclassova"})
"""Objectives whose model is a classifier with class probabilities."""

MODEL_FILE_START = b"tree"
MODEL_FILE_TREES_END = b"\nend of trees"
"""How a LightGBM text model file begins, and the line after its last tree: both are checked
before LightGBM reads the file, since LightGBM writes its own refusal to stderr besides raising
(a file that has both and is still broken gets that extra line)."""


@dataclass(frozen=True, slots=True)
class LightGBMModel:
    """A booster and how its outputs read."""

    booster: Any
    """The lightgbm.Booster."""
    objective: str
    classes: tuple[Any, ...]
    """Class labels in probability column order; empty for any other objective."""
    feature_names: tuple[str, ...] | None
    n_features: int


def read_lightgbm(path: Path, *, safe: bool) -> LightGBMModel:
    """Load a text model file, or a LightGBM scikit-learn model pickle (refused when ``safe``).
    Raises ArtifactError when unreadable or not LightGBM's, UnsafeArtifact when ``safe``
    refuses it."""
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder, not a LightGBM model file")
    labels: tuple[Any, ...] | None = None
    if path.suffix.lower() in PICKLE_SUFFIXES:
        estimator = load_sklearn(path, safe=safe)
        if not isinstance(estimator, lgb.LGBMModel):
            raise ArtifactError(
                f"{path.name} holds a {type(estimator).__name__}, not a LightGBM scikit-learn model"
            )
        booster = getattr(estimator, "_Booster", None)
        if booster is None:
            raise ArtifactError(f"{path.name} holds a LightGBM model that was never fitted")
        # A scikit-learn regressor stays one whatever its objective.
        is_classifier = isinstance(estimator, lgb.LGBMClassifier)
        labels = tuple(plain(c) for c in estimator.classes_) if is_classifier else ()
    else:
        text = path.read_bytes()
        if not text.startswith(MODEL_FILE_START):
            raise ArtifactError(f"{path.name} is not a LightGBM text model file")
        if MODEL_FILE_TREES_END not in text:
            raise ArtifactError(f"{path.name} is cut short: its trees do not end")
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise ArtifactError(f"cannot load {path.name}: {exc}") from None
    return _describe(booster, path.name, labels)


def _describe(booster: Any, file_name: str, labels: tuple[Any, ...] | None) -> LightGBMModel:
    """What the booster's header says (its first tree dumped, not all of them). ``labels`` are
    a scikit-learn model's classes (empty for its regressors), None for a bare booster."""
    header = booster.dump_model(num_iteration=1)
    if header.get("pandas_categorical"):
        raise ArtifactError(
            f"{file_name} has pandas categorical features, which the lightgbm runtime does not take"
        )
    objective = str(header.get("objective", "")).split(" ", 1)[0]
    classes: tuple[Any, ...] = ()
    if objective in CLASSIFIER_OBJECTIVES and labels != ():
        count = max(int(header.get("num_class", 1)), 2)
        classes = labels if labels is not None else tuple(range(count))
    names = tuple(str(n) for n in booster.feature_name())
    placeholders = tuple(f"Column_{i}" for i in range(len(names)))
    return LightGBMModel(
        booster=booster,
        objective=objective,
        classes=classes,
        feature_names=None if names == placeholders else names,
        n_features=int(booster.num_feature()),
    )


class LightGBMRuntime:
    """A LightGBM booster; thread-safe for prediction (LightGBM takes a shared lock)."""

    framework: ClassVar[str] = "lightgbm"
    needs_process: ClassVar[bool] = False

    def __init__(self, model: LightGBMModel, signature: Signature) -> None:
        """Serve ``model`` under ``signature``; raises ArtifactError when they do not fit."""
        self._model = model
        self.signature = signature
        self._names = booster_names(signature, "LightGBM", model.n_features, model.feature_names)
        self._classes: list[object] = list(model.classes)
        self._labels = np.asarray(self._classes)

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> LightGBMRuntime:
        """Load the model file of a verified version folder."""
        return cls(read_lightgbm(folder / manifest.model_file, safe=safe), manifest.signature)

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """Feature names (unless LightGBM's Column_0, … placeholders) and count, classes and
        probabilities."""
        model = read_lightgbm(path, safe=safe)
        return ModelFacts(
            feature_names=model.feature_names,
            n_features=model.n_features,
            classes=model.classes,
            has_proba=bool(model.classes),
        )

    @property
    def has_proba(self) -> bool:
        """True for a classifier objective (binary, multiclass, multiclassova)."""
        return bool(self._classes)

    @property
    def classes(self) -> list[object]:
        """Class labels in ``predict_proba`` column order (empty for other objectives)."""
        return self._classes

    @property
    def scales_with_threads(self) -> bool:
        """True: each row's answer is the same bits whatever rows share the call (checked with
        NaN cells, blocks against the whole), and LightGBM predicts without the GIL."""
        return True

    def predict(self, batch: Batch) -> np.ndarray:
        """The class of each row for a classifier, else the booster's value."""
        if self._classes:
            return self.predict_with_proba(batch)[0]
        return self._output(batch)

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Class probabilities; raises InvalidInput when the objective gives none."""
        if not self._classes:
            raise InvalidInput(
                f"this model does not give probabilities (objective {self._model.objective})"
            )
        values = self._output(batch)
        if values.ndim == 1:
            # As LGBMClassifier.predict_proba: P(0) is 1 - P(1).
            values = np.vstack((1.0 - values, values)).T
        return np.ascontiguousarray(values, dtype=np.float64)

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Classes (the most probable, as LGBMClassifier.predict picks them) and probabilities
        from one prediction; raises InvalidInput when the objective gives no probabilities."""
        probabilities = self.predict_proba(batch)
        return self._labels[np.argmax(probabilities, axis=1)], probabilities

    def _output(self, batch: Batch) -> np.ndarray:
        """The booster's values for ``batch``."""
        rows = numeric_matrix(batch, self._names)
        try:
            values = self._model.booster.predict(rows, num_threads=SERVING_THREADS)
        except lgb.basic.LightGBMError as exc:
            raise InvalidInput(f"the LightGBM model refused the rows: {exc}") from None
        return np.asarray(values, dtype=np.float64)
