"""Tree-ensemble kernel: a forest's own trees summed without scikit-learn's per-call overhead.

``RandomForestClassifier.predict`` on one row spends almost all its time outside the trees:
joblib's ``Parallel`` dispatch and, per tree, ``check_is_fitted`` and a feature-count check
(about 14 ms for 100 trees on one core here, against ~0.3 ms in the trees' compiled code).
For forests of single-output trees this kernel calls each tree's compiled ``predict`` in
estimator order and sums into zeros exactly as scikit-learn's ``_accumulate_prediction`` does
(same float32 input, same additions in the same order, same division), so its answers are
bit-for-bit the estimator's. The runtime also checks that on the model's reference rows when it
loads and falls back to the estimator if they ever differ (a future scikit-learn changing its
arithmetic), and any input the kernel does not handle (non-finite values, which scikit-learn
validates) goes to the estimator too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from mlserve.runtimes.base import FLOAT32_BOUND

FORESTS = (RandomForestClassifier, ExtraTreesClassifier, RandomForestRegressor, ExtraTreesRegressor)
CLASSIFIERS = (RandomForestClassifier, ExtraTreesClassifier)


class ForestKernel:
    """``predict`` and ``predict_proba`` of a fitted single-output forest, from its trees."""

    def __init__(self, forest: Any) -> None:
        self._trees = [tree.tree_ for tree in forest.estimators_]
        self._count = len(self._trees)
        self._features = int(forest.n_features_in_)
        self.is_classifier = isinstance(forest, CLASSIFIERS)
        self.has_proba = self.is_classifier
        self._classes = forest.classes_ if self.is_classifier else None
        self._width = int(forest.n_classes_) if self.is_classifier else 1

    @classmethod
    def of(cls, forest: Any) -> ForestKernel | None:
        """A kernel for ``forest``, or None when it is not a fitted single-output forest of
        scikit-learn trees (subclasses too: they may override prediction)."""
        if type(forest) not in FORESTS or getattr(forest, "n_outputs_", None) != 1:
            return None
        estimators = getattr(forest, "estimators_", None)
        if not estimators or not all(hasattr(tree, "tree_") for tree in estimators):
            return None
        kernel = cls(forest)
        return kernel if kernel.agrees_with(forest) else None

    def agrees_with(self, forest: Any, rows: int = 256) -> bool:
        """Whether this kernel answers exactly as ``forest`` on rows built from the forest's
        own split thresholds (each value a threshold or its float32 neighbour, so rows reach
        leaves on both sides of the splits)."""
        x = self._probe_rows(rows)
        names = getattr(forest, "feature_names_in_", None)
        given = x if names is None else pd.DataFrame(x, columns=names)  # as it was fitted
        if self.is_classifier:
            return bool(
                np.array_equal(self.predict_proba(x), forest.predict_proba(given))
                and np.array_equal(self.predict(x), forest.predict(given))
            )
        return bool(np.array_equal(self.predict(x), forest.predict(given)))

    def _probe_rows(self, rows: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, self._features)).astype(np.float32)
        for tree in self._trees:
            inner = tree.feature >= 0
            features = tree.feature[inner]
            thresholds = tree.threshold[inner].astype(np.float32)
            if not len(features):
                continue
            picks = rng.integers(0, len(features), size=rows)
            nudged = np.where(
                rng.random(rows) < 0.5,
                thresholds[picks],
                np.nextafter(thresholds[picks], np.float32(np.inf)),
            )
            x[np.arange(rows), features[picks]] = nudged
        return x.astype(np.float64)

    def accepts(self, x: np.ndarray) -> bool:
        """True for a 2-D numeric array of the forest's width whose values float32 holds (the
        rest goes to the estimator, which validates it and raises its own errors: scikit-learn
        trees compute in float32 and refuse 1e300 as "too large for dtype('float32')")."""
        return (
            x.ndim == 2
            and x.shape[1] == self._features
            and x.dtype.kind in "fiub"
            and bool((np.abs(x) < FLOAT32_BOUND).all())
        )

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Mean class probabilities (classifiers) of rows ``accepts`` took."""
        x32 = np.asarray(x, dtype=np.float32)
        total = np.zeros((x32.shape[0], self._width), dtype=np.float64)
        width = self._width
        for tree in self._trees:
            total += tree.predict(x32)[:, :width]
        total /= self._count
        return total

    def classes_of(self, probabilities: np.ndarray) -> np.ndarray:
        """The class of each row of ``predict_proba``'s answer: the most probable, the first of
        equals, as scikit-learn picks it."""
        assert self._classes is not None, "a regressor has no classes"
        classes: np.ndarray = self._classes.take(np.argmax(probabilities, axis=1))
        return classes

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classes (the most probable, as scikit-learn picks it) or mean regression values."""
        if self._classes is not None:
            return self.classes_of(self.predict_proba(x))
        x32 = np.asarray(x, dtype=np.float32)
        total = np.zeros(x32.shape[0], dtype=np.float64)
        for tree in self._trees:
            total += tree.predict(x32)[:, 0]
        total /= self._count
        return total
