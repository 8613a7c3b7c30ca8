"""Customer-like data for the drift tests of the server and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd


def customers(rows: int, seed: int, *, monthly_shift: float = 0.0) -> pd.DataFrame:
    """Categorical plan (some missing) and region, numeric monthly and tenure."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "team"], rows, p=[0.5, 0.3, 0.2]).astype(object)
    plan[rng.random(rows) < 0.05] = None
    return pd.DataFrame(
        {
            "plan": plan,
            "region": rng.choice(["eu", "us", "apac"], rows, p=[0.5, 0.3, 0.2]),
            "monthly": rng.normal(50.0 + monthly_shift, 10.0, rows).round(2),
            "tenure": rng.integers(1, 60, rows),
        }
    )
