"""Messy training datasets: nulls, categoricals, duplicates, a constant column, unlabelled rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True, slots=True)
class MessyDataset:
    """A dataset file plus what validation should find in it."""

    path: Path
    frame: pd.DataFrame
    target: str
    unlabelled_rows: int
    duplicate_rows: int
    constant_column: str

    @property
    def usable_rows(self) -> int:
        """Rows left after dropping unlabelled rows and duplicates."""
        return len(self.frame) - self.unlabelled_rows - self.duplicate_rows


def churn_frame(rows: int = 80, seed: int = 7) -> pd.DataFrame:
    """A learnable binary target ("yes"/"no") from age and plan, with messy columns.

    Nulls in ``age`` (numeric) and ``plan`` (categorical), a constant ``channel``, three rows
    without a target, and five duplicated rows appended at the end.
    """
    rng = np.random.default_rng(seed)
    age = rng.normal(45, 12, rows).round(1)
    plan = rng.choice(["basic", "pro", "team"], rows)
    fee = rng.uniform(10, 100, rows).round(2)  # continuous, so no rows are equal by accident
    score = (age - 45) / 12 + 1.5 * (plan == "basic") - 0.5 + rng.normal(0, 0.4, rows)
    frame = pd.DataFrame(
        {
            "age": age,
            "plan": pd.Series(plan, dtype=object),
            "monthly_fee": fee,
            "channel": "web",
            "churned": pd.Series(np.where(score > 0, "yes", "no"), dtype=object),
        }
    )
    frame.loc[[2, 9, 17, 33], "age"] = np.nan
    frame.loc[[4, 21, 40, 58], "plan"] = None
    frame.loc[[6, 27, 66], "churned"] = None
    return pd.concat([frame, frame.iloc[[0, 1, 3, 5, 8]]], ignore_index=True)


def house_frame(rows: int = 80, seed: int = 11) -> pd.DataFrame:
    """A learnable price from size, rooms and city, with messy columns.

    Nulls in ``sqft`` and ``city``, a constant ``country``, two rows without a price, and three
    duplicated rows appended at the end.
    """
    rng = np.random.default_rng(seed)
    sqft = rng.uniform(40, 200, rows).round(1)
    rooms = rng.integers(1, 6, rows)
    city = rng.choice(["amsterdam", "utrecht", "delft"], rows)
    premium = pd.Series(city).map({"amsterdam": 150.0, "utrecht": 80.0, "delft": 40.0})
    price = 3 * sqft + 20 * rooms + premium.to_numpy() + rng.normal(0, 10, rows)
    frame = pd.DataFrame(
        {
            "sqft": sqft,
            "rooms": rooms,
            "city": pd.Series(city, dtype=object),
            "country": "NL",
            "price": price.round(2),
        }
    )
    frame.loc[[3, 15, 30], "sqft"] = np.nan
    frame.loc[[7, 19], "city"] = None
    frame.loc[[11, 50], "price"] = np.nan
    return pd.concat([frame, frame.iloc[[0, 2, 4]]], ignore_index=True)
