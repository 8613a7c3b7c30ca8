"""The runtime contract every framework plugs into."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, TypeAlias

import numpy as np
import pandas as pd

from mlserve.types import Signature, VersionManifest

FLOAT32_BOUND = 2.0**128 - 2.0**103
"""The smallest magnitude float32 rounds to infinity (halfway past its largest value): models
that compute in float32 (scikit-learn's trees) cannot take a value this large."""

Batch: TypeAlias = np.ndarray | pd.DataFrame
"""Rows to predict: a 2-D array in signature order, or a frame with the signature's columns."""


class Runtime(Protocol):
    """A loaded model: synchronous ``predict`` (and ``predict_proba`` where the model has it).

    Implementations are safe to call from several threads at once. Serving decides where the
    calls run; a runtime whose code holds the GIL sets ``needs_process``.
    """

    framework: ClassVar[str]
    needs_process: ClassVar[bool]
    signature: Signature

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> Runtime:
        """Load the model file of a verified version folder."""
        ...

    @property
    def has_proba(self) -> bool:
        """True when ``predict_proba`` is available."""
        ...

    @property
    def classes(self) -> list[object]:
        """Class labels in ``predict_proba`` column order (empty for regressors)."""
        ...

    @property
    def scales_with_threads(self) -> bool:
        """True when blocks of rows predicted on several threads at once run in parallel and
        give, row for row, exactly what one call on all the rows gives (batch jobs then score
        a chunk on several cores of one process)."""
        ...

    def predict(self, batch: Batch) -> np.ndarray:
        """Predict one output per row."""
        ...

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Class probabilities, one row per input row; raises InvalidInput when unsupported."""
        ...

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` and ``predict_proba`` of the same rows, exactly as the two calls give
        them, in one pass where the model allows; raises InvalidInput when unsupported."""
        ...
