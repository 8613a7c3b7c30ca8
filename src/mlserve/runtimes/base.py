"""The runtime contract every framework plugs into."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias

import numpy as np
import pandas as pd

from mlserve.types import Signature, VersionManifest

FLOAT32_BOUND = 2.0**128 - 2.0**103
"""The smallest magnitude float32 rounds to infinity (halfway past its largest value): models
that compute in float32 (scikit-learn's trees) cannot take a value this large."""

Batch: TypeAlias = np.ndarray | pd.DataFrame
"""Rows to predict: a 2-D array in signature order, or a frame with the signature's columns."""


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What registration learns from a model file itself, before any data is seen.

    A runtime fills what its format records: feature names and count, class labels, whether it
    gives probabilities; a format that carries a whole signature (an MLflow model) gives it, and
    data passed with ``--signature-from`` then only adds the reference profile.
    """

    feature_names: tuple[str, ...] | None = None
    """Input names the model records (None when it records none, or only placeholders)."""
    n_features: int | None = None
    """How many inputs the model takes, when it says."""
    classes: tuple[Any, ...] = ()
    """Class labels in probability column order (empty for a regressor)."""
    has_proba: bool = False
    signature: Signature | None = None
    """The whole signature, when the model carries one."""
    input_example: pd.DataFrame | None = None
    """Rows the model came with (an MLflow input example), to profile when no data is given."""


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

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """What the model file (or folder) at ``path`` says about itself, for registration.

        Raises ArtifactError when it is not a model of this framework, UnsafeArtifact when
        ``safe`` refuses it.
        """
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
