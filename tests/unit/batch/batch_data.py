"""A small classifier with numeric and categorical features, and inputs for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlserve.monitoring import describe_features
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature

NUMERIC = ["f0", "f1", "f2", "f3"]
FEATURES = [*NUMERIC, "plan"]
PLANS = ["basic", "pro", "team"]


def feature_frame(rows: int, seed: int) -> pd.DataFrame:
    """Learnable features: four numbers and a plan ('basic', 'pro' or 'team')."""
    x, _ = make_classification(
        n_samples=rows, n_features=4, n_informative=3, n_redundant=0, random_state=seed
    )
    frame = pd.DataFrame(x.round(6), columns=NUMERIC)
    frame["plan"] = np.random.default_rng(seed).choice(PLANS, rows)
    return frame


def input_frame(rows: int, seed: int = 1) -> pd.DataFrame:
    """Rows to score: an ``id``, the features, and a ``segment`` column to pass through."""
    frame = feature_frame(rows, seed)
    frame.insert(0, "id", np.arange(1000, 1000 + rows))
    frame["segment"] = np.where(frame["f0"] > 0, "north", "south")
    return frame


def train_classifier(seed: int = 0) -> tuple[Pipeline, pd.DataFrame]:
    """Scaler + one-hot (unknown plans are errors) + logistic regression, and its training data."""
    frame = feature_frame(300, seed)
    target = np.where(frame["f0"] + (frame["plan"] == "pro") > 0.3, "yes", "no")
    model = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), NUMERIC),
                        ("cat", OneHotEncoder(handle_unknown="error"), ["plan"]),
                    ]
                ),
            ),
            ("classify", LogisticRegression()),
        ]
    )
    return model.fit(frame, target), frame


def register_classifier(
    store: RegistryStore, folder: Path, seed: int = 0, name: str = "churn"
) -> int:
    """Train and register a version of ``name``; returns its version number."""
    model, frame = train_classifier(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = dump_sklearn(model, folder / f"model-{seed}.joblib")
    signature = Signature(
        inputs=describe_features(frame[FEATURES]),
        task="classification",
        outputs=("predict", "predict_proba"),
        classes=tuple(str(c) for c in model.classes_),
        target="churned",
    )
    return store.register_version(
        name, path, NewVersion(framework="sklearn", signature=signature)
    ).version
