"""Linear-classifier kernel: the estimator's own arithmetic without its per-call validation.

``LogisticRegression.predict`` on one row took ~150 µs here, of which the arithmetic
(``X @ coef_.T + intercept_`` and a threshold) is ~4 µs: the rest is scikit-learn's input
validation (namespace and dataframe-library checks, ``check_array``, feature-name checks),
run again on every call. For classifiers that predict through ``LinearClassifierMixin``
unchanged (LogisticRegression, SGDClassifier, LinearSVC, Perceptron, ...; not RidgeClassifier,
which overrides ``predict``) with a dense ``coef_``, this kernel does the same operations on the same array: the same
matrix product, the same addition, the same threshold or argmax and ``take``, so its answers
are bit-for-bit the estimator's. For LogisticRegression it also gives ``predict_proba`` the
way scikit-learn computes it (the logistic function of the binary score stacked as
``[1 - p, p]``, or scikit-learn's own softmax for more classes).

As with the forest kernel, a load-time probe compares the kernel with the estimator and keeps
the estimator if they ever differ (a scikit-learn release changing its arithmetic), and the
kernel takes only finite float64 arrays of the right width: anything else goes to the
estimator, which validates it and raises its own errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.utils.extmath import softmax


class LinearKernel:
    """``predict`` (and LogisticRegression's ``predict_proba``) of a fitted linear classifier."""

    def __init__(self, model: Any, *, with_proba: bool) -> None:
        coef = np.asarray(model.coef_)
        self._coef_t = coef.T if coef.ndim == 2 else coef
        self._intercept = model.intercept_
        self._classes = model.classes_
        self._features = int(model.n_features_in_)
        self.has_proba = with_proba

    @classmethod
    def of(cls, model: Any) -> LinearKernel | None:
        """A kernel for ``model``, or None when it is not a fitted linear classifier that
        predicts through LinearClassifierMixin unchanged, with a dense ``coef_``."""
        kind = type(model)
        if (
            not isinstance(model, LinearClassifierMixin)
            or kind.predict is not LinearClassifierMixin.predict
            or kind.decision_function is not LinearClassifierMixin.decision_function
            or not isinstance(getattr(model, "coef_", None), np.ndarray)
            or not hasattr(model, "classes_")
            or not hasattr(model, "n_features_in_")
        ):
            return None
        kernel = cls(model, with_proba=kind is LogisticRegression)
        if not kernel.agrees_with(model, probabilities=False):
            return None
        if kernel.has_proba and not kernel.agrees_with(model, probabilities=True):
            kernel.has_proba = False  # predict stays fast; probabilities come from the estimator
        return kernel

    def agrees_with(self, model: Any, *, probabilities: bool, rows: int = 256) -> bool:
        """Whether this kernel answers exactly as ``model`` on random rows (some of them tiny
        or huge, and some on the decision boundary's side of zero scores)."""
        rng = np.random.default_rng(0)
        x = rng.normal(size=(rows, self._features))
        x[: rows // 4] *= 1e-8
        x[rows // 4 : rows // 2] *= 1e6
        names = getattr(model, "feature_names_in_", None)
        given = x if names is None else pd.DataFrame(x, columns=names)  # as it was fitted
        if probabilities:
            return bool(np.array_equal(self.predict_proba(x), model.predict_proba(given)))
        return bool(np.array_equal(self.predict(x), model.predict(given)))

    def accepts(self, x: np.ndarray) -> bool:
        """True for a finite 2-D float64 array of the model's width."""
        return (
            x.ndim == 2
            and x.shape[1] == self._features
            and x.dtype == np.float64
            and bool(np.isfinite(x).all())
        )

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Scores as LinearClassifierMixin.decision_function computes them for a dense array."""
        scores: np.ndarray = x @ self._coef_t + self._intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            return scores.reshape(-1)
        return scores

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classes: positive scores pick ``classes_[1]``, else the highest score's class."""
        scores = self.decision_function(x)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        classes: np.ndarray = self._classes.take(indices, axis=0)
        return classes

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """LogisticRegression's probabilities (only when ``has_proba``)."""
        scores = self.decision_function(x)
        if scores.ndim == 1:
            positive = expit(scores)
            return np.stack([1 - positive, positive], axis=1)
        probabilities: np.ndarray = softmax(scores, copy=False)
        return probabilities
