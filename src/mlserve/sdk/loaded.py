"""A registered version loaded in this process, answering as the server would.

Rows go through the input checker every door uses (``mlserve.inputs``): a frame the server
would answer 400 raises InvalidInput here with the same words, and accepted rows get the same
predictions as from the server, `mlserve predict` and batch jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mlserve.errors import InvalidInput, ModelRefused
from mlserve.inputs import (
    CheckedRows,
    InputPolicy,
    RowChecker,
    build_checker,
    predict_around_refusals,
    rejection_text,
)
from mlserve.registry import ModelVersion
from mlserve.runtimes import Batch, Runtime, load_runtime
from mlserve.sdk.columns import column_values
from mlserve.types import Signature, read_manifest


class LoadedModel:
    """One registered version, verified and loaded: ``predict`` and ``predict_proba`` on frames.

    Build it with :func:`mlserve.load`. Safe to share between threads, as the runtime is.
    """

    def __init__(self, version: ModelVersion, runtime: Runtime, checker: RowChecker) -> None:
        self.info = version
        """The version as the registry records it (metrics, tags, aliases, …)."""
        self._runtime = runtime
        self._checker = checker

    @classmethod
    def from_folder(
        cls, version: ModelVersion, folder: Path, *, policy: InputPolicy, safe: bool
    ) -> LoadedModel:
        """Load the version folder after checking its sha256 against the registry's; raises
        ArtifactIntegrityError when the file changed, MissingExtra when the framework's packages
        are not installed, UnsafeArtifact when ``safe`` loading refuses it."""
        runtime = load_runtime(folder, expected_sha256=version.sha256, safe=safe)
        checker = build_checker(runtime, read_manifest(folder).reference_profile, policy)
        return cls(version, runtime, checker)

    @property
    def name(self) -> str:
        """The model's name."""
        return self.info.name

    @property
    def version(self) -> int:
        """The version number."""
        return self.info.version

    @property
    def framework(self) -> str:
        """The framework whose runtime serves it (``sklearn``, ``xgboost``, ``onnx``, …)."""
        return self.info.framework

    @property
    def signature(self) -> Signature:
        """Input features (names, dtypes, kinds, categories), outputs, task and classes."""
        return self._runtime.signature

    @property
    def classes(self) -> list[object]:
        """Class labels in ``predict_proba`` column order (empty for a regressor)."""
        return list(self._runtime.classes)

    @property
    def has_proba(self) -> bool:
        """True when the model gives class probabilities."""
        return self._runtime.has_proba

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """One prediction per row of ``frame``, whose columns are named by feature (extra
        columns are ignored unless the model's ``extra_columns`` setting refuses them).

        Raises InvalidInput naming the first row the server would refuse (ModelRefused when
        the model itself refused it), as ``row 3: feature 'plan' is missing, …``.
        """
        parts = self._predict(frame, self._runtime.predict)
        return np.concatenate(parts)

    def predict_proba(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Class probabilities: one column per class label (in ``classes`` order), indexed
        like ``frame``. Raises InvalidInput as ``predict`` does, and when the model gives no
        probabilities."""
        if not self._runtime.has_proba:
            raise InvalidInput(
                f"model {self.name}:{self.version} does not give probabilities (no predict_proba)"
            )
        parts = self._predict(frame, self._runtime.predict_proba)
        return pd.DataFrame(np.concatenate(parts), index=frame.index, columns=self.classes)

    def __repr__(self) -> str:
        return f"LoadedModel({self.name}:{self.version}, framework={self.framework!r})"

    def _predict(
        self, frame: pd.DataFrame, call: Callable[[Batch], np.ndarray]
    ) -> list[np.ndarray]:
        """``call`` on the checked rows, in row order; a refused row raises InvalidInput."""
        checked = self._check(frame)
        if not checked.all_accepted:
            raise InvalidInput(rejection_text(checked.rejections()))
        results, refused = predict_around_refusals(call, checked.batch)
        if refused:
            raise ModelRefused(rejection_text(sorted(refused.items())))
        return [np.asarray(result) for result in results]

    def _check(self, frame: pd.DataFrame) -> CheckedRows:
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInput(f"expected a pandas DataFrame, got {type(frame).__name__}")
        if len(frame) == 0:
            raise InvalidInput("no rows to predict")
        columns = {str(name): column_values(frame[name]) for name in frame.columns}
        return self._checker.check_columns(columns, len(frame), extra=list(columns))
