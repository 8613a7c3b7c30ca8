"""Messy datasets written to files, as `mlserve train` reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from messy_data import MessyDataset, churn_frame, house_frame


@pytest.fixture
def churn_csv(tmp_path: Path) -> MessyDataset:
    """The messy classification dataset as ``churn.csv``."""
    frame = churn_frame()
    path = tmp_path / "churn.csv"
    frame.to_csv(path, index=False)
    return MessyDataset(path, frame, "churned", 3, 5, "channel")


@pytest.fixture
def house_parquet(tmp_path: Path) -> MessyDataset:
    """The messy regression dataset as ``houses.parquet``."""
    frame = house_frame()
    path = tmp_path / "houses.parquet"
    frame.to_parquet(path, index=False)
    return MessyDataset(path, frame, "price", 2, 3, "country")
