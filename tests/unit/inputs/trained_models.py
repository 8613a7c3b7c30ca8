"""Small real models trained on tiny data, described as `mlserve train` registers them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlserve.monitoring import build_reference_profile, describe_features
from mlserve.runtimes import SklearnRuntime
from mlserve.training import normalize_features
from mlserve.types import Signature

ROWS = 24


@dataclass(frozen=True)
class TrainedModel:
    """A fitted estimator with the signature and reference profile `mlserve train` would record."""

    estimator: Any
    signature: Signature
    profile: dict[str, Any]

    @property
    def runtime(self) -> SklearnRuntime:
        """The estimator as serving loads it."""
        return SklearnRuntime(self.estimator, self.signature)


def mixed_frame() -> tuple[pd.DataFrame, np.ndarray]:
    """A numeric, a boolean and a categorical column, as `mlserve train` normalizes them."""
    rng = np.random.default_rng(0)
    raw = pd.DataFrame(
        {
            "a": rng.normal(size=ROWS),
            "b": rng.integers(0, 2, ROWS).astype(bool),
            "c": rng.choice(["x", "y", "z"], ROWS),
        }
    )
    return normalize_features(raw), (raw["a"] > 0).to_numpy().astype(int)


def numeric_frame(*, with_nan: bool = False, scale: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    """Two numeric columns (``a`` with a NaN every fourth row when ``with_nan``)."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.normal(scale=scale, size=ROWS), "d": rng.normal(size=ROWS)})
    target = (frame["d"] > 0).to_numpy().astype(int)
    if with_nan:
        frame.loc[::4, "a"] = np.nan
    return frame, target


def trained(estimator: Any, frame: pd.DataFrame, target: np.ndarray) -> TrainedModel:
    """Fit ``estimator`` and describe it as `mlserve train` registers a model."""
    estimator.fit(frame, target)
    return TrainedModel(
        estimator, Signature(inputs=describe_features(frame)), build_reference_profile(frame)
    )
