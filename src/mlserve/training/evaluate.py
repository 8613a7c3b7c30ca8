"""Metrics for a trained model, side by side with a trivial baseline."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

from mlserve.types import Task

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2")
HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f1", "roc_auc", "r2"}
DECIDING_METRIC: dict[Task, str] = {"classification": "accuracy", "regression": "rmse"}
"""The metric a model must beat its baseline on: the one a trivial model does best on."""


def is_better(metric: str, value: float, baseline: float) -> bool:
    """True when ``value`` is strictly better than ``baseline`` on ``metric``."""
    return value > baseline if metric in HIGHER_IS_BETTER else value < baseline


def baseline_estimator(task: Task) -> Any:
    """The trivial model a real one must beat: majority class or mean."""
    return (
        DummyClassifier(strategy="most_frequent") if task == "classification" else DummyRegressor()
    )


def evaluate(model: Any, x_test: pd.DataFrame, y_test: pd.Series, task: Task) -> dict[str, float]:
    """Test-set metrics: accuracy, precision, recall, F1, ROC-AUC; or RMSE, MAE, R²."""
    predicted = model.predict(x_test)
    if task == "regression":
        return {
            "rmse": float(root_mean_squared_error(y_test, predicted)),
            "mae": float(mean_absolute_error(y_test, predicted)),
            "r2": float(r2_score(y_test, predicted)),
        }
    classes = np.unique(y_test)
    binary = len(getattr(model, "classes_", classes)) == 2
    average = "binary" if binary else "macro"
    pos_label = model.classes_[1] if binary else 1
    with warnings.catch_warnings():
        # A baseline that never predicts the positive class has undefined precision; it is 0.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        metrics = {
            "accuracy": float(accuracy_score(y_test, predicted)),
            "precision": float(
                precision_score(
                    y_test, predicted, average=average, pos_label=pos_label, zero_division=0
                )
            ),
            "recall": float(
                recall_score(
                    y_test, predicted, average=average, pos_label=pos_label, zero_division=0
                )
            ),
            "f1": float(
                f1_score(y_test, predicted, average=average, pos_label=pos_label, zero_division=0)
            ),
        }
        if hasattr(model, "predict_proba") and len(classes) > 1:
            proba = model.predict_proba(x_test)
            try:
                if binary:
                    metrics["roc_auc"] = float(roc_auc_score(y_test == pos_label, proba[:, 1]))
                else:
                    metrics["roc_auc"] = float(
                        roc_auc_score(y_test, proba, multi_class="ovr", labels=model.classes_)
                    )
            except ValueError:  # a class absent from the test split: AUC is undefined
                pass
    return metrics
