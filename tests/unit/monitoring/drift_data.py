"""Synthetic customers for drift tests: a reference profile and windows, shifted on purpose."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlserve.monitoring import build_reference_profile
from mlserve.monitoring.drift import DriftCheck, Reference

PLAN_MIX = (0.5, 0.3, 0.2)
"""Shares of basic, pro and team."""
REGION_MIX = (0.4, 0.3, 0.2, 0.07, 0.03)
"""Shares of eu, us, apac, latam and mena: two rare categories exercise the pooling."""


def customers(
    rows: int,
    seed: int,
    *,
    monthly_shift: float = 0.0,
    plan_mix: tuple[float, float, float] = PLAN_MIX,
) -> pd.DataFrame:
    """Numeric monthly (normal), tenure (integers, many ties), score (skewed); categorical
    plan (5 % missing) and region (with rare categories)."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], rows, p=list(plan_mix)).astype(object)
    plan[rng.random(rows) < 0.05] = None
    return pd.DataFrame(
        {
            "monthly": rng.normal(50.0 + monthly_shift, 10.0, rows),
            "tenure": rng.integers(1, 60, rows),
            "plan": plan,
            "region": rng.choice(["eu", "us", "apac", "latam", "mena"], rows, p=list(REGION_MIX)),
            "score": rng.exponential(2.0, rows),
        }
    )


def churn_label(frame: pd.DataFrame) -> np.ndarray:
    """A fixed "model": churns when monthly plus half the tenure exceeds 65."""
    return np.where(frame["monthly"] + 0.5 * frame["tenure"] > 65, "yes", "no")


def reference_of(training: pd.DataFrame) -> Reference:
    """The reference profile of ``training``, with the model's predictions on its sample."""
    reference = Reference.from_profile(build_reference_profile(training))
    return reference.with_predictions(churn_label(reference.frame), "categorical")


def window_check(reference: Reference, window: pd.DataFrame) -> DriftCheck:
    """A check of ``window`` (predicted by the same model) against ``reference``."""
    return DriftCheck(
        model="churn",
        version="1",
        reference=reference,
        inputs=window,
        predictions=pd.Series(churn_label(window)),
    )
