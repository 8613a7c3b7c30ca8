"""Baseline training: validate a dataset, train a scikit-learn pipeline, register it."""

from mlserve.training.data import read_dataset
from mlserve.training.train import (
    ALL_ESTIMATORS,
    ESTIMATORS,
    TrainRequest,
    TrainResult,
    git_commit,
    normalize_features,
    train,
)
from mlserve.training.validate import Problem, ValidationReport, validate_dataset

__all__ = [
    "ALL_ESTIMATORS",
    "ESTIMATORS",
    "Problem",
    "TrainRequest",
    "TrainResult",
    "ValidationReport",
    "git_commit",
    "normalize_features",
    "read_dataset",
    "train",
    "validate_dataset",
]
