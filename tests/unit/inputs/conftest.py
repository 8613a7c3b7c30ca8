"""Small real models trained on tiny data, to probe what each one takes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from trained_models import TrainedModel, mixed_frame, numeric_frame, trained

from mlserve.training.train import build_pipeline


@pytest.fixture(scope="session")
def models() -> dict[str, TrainedModel]:
    """Every model kind the probe must answer for, trained once (treat as read-only)."""
    mixed, mixed_target = mixed_frame()
    numeric, numeric_target = numeric_frame()
    gappy, gappy_target = numeric_frame(with_nan=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    return {
        "train-pipeline-forest": trained(build_pipeline(mixed, forest), mixed, mixed_target),
        "train-pipeline-logistic": trained(
            build_pipeline(mixed, LogisticRegression()), mixed, mixed_target
        ),
        "forest": trained(
            RandomForestClassifier(n_estimators=5, random_state=0), numeric, numeric_target
        ),
        "forest-trained-with-nan": trained(
            RandomForestClassifier(n_estimators=5, random_state=0), gappy, gappy_target
        ),
        "logistic": trained(LogisticRegression(), numeric, numeric_target),
        "hist-gradient-boosting": trained(
            HistGradientBoostingClassifier(max_iter=5, random_state=0), numeric, numeric_target
        ),
        "imputes-one-column": trained(
            Pipeline(
                [
                    (
                        "prepare",
                        ColumnTransformer(
                            [("fill", SimpleImputer(strategy="median"), ["a"])],
                            remainder="passthrough",
                        ),
                    ),
                    ("model", LogisticRegression()),
                ]
            ),
            numeric,
            numeric_target,
        ),
    }


@pytest.fixture(scope="session")
def log_model() -> TrainedModel:
    """log(a), log(d) then a logistic regression: it refuses a row of zeros (log 0 = -inf)."""
    frame, target = numeric_frame()
    positive = frame.abs() + 1.0
    pipeline = Pipeline([("log", FunctionTransformer(np.log)), ("model", LogisticRegression())])
    return trained(pipeline, positive, target)


@pytest.fixture(scope="session")
def narrow_forest() -> TrainedModel:
    """What `mlserve train` builds for a forest, on a feature whose spread is 0.001: the scaler
    multiplies its values by about 1000 before the forest sees them."""
    frame, target = numeric_frame(scale=1e-3)
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    return trained(build_pipeline(frame, forest), frame, target)
