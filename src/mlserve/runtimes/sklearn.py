"""scikit-learn runtime: joblib artifacts, or skops ones for loading without running pickles."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import joblib
import numpy as np
import pandas as pd

from mlserve.errors import ArtifactError, InvalidInput, UnsafeArtifact
from mlserve.runtimes.base import Batch, ModelFacts
from mlserve.runtimes.linear import LinearKernel
from mlserve.types import Signature, VersionManifest

if TYPE_CHECKING:
    from mlserve.runtimes.forest import ForestKernel

SKOPS_SUFFIX = ".skops"
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
FOREST_CLASS_NAMES = frozenset(
    {
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "RandomForestRegressor",
        "ExtraTreesRegressor",
    }
)
"""The class names of ``forest.FORESTS`` (keep them equal): the forest kernel, and with it
scikit-learn's ensembles and trees, is imported only for a model of one of these classes."""
SAFE_EXTRA_TYPES = frozenset({"numpy.dtype"})
"""Types skops does not trust by default that load without running code: skops rebuilds a
dtype from an empty array. SimpleImputer keeps one, so every trained pipeline has it."""


def dump_sklearn(estimator: Any, path: Path) -> Path:
    """Save an estimator as joblib, or as skops when ``path`` ends in ``.skops``."""
    if path.suffix == SKOPS_SUFFIX:
        import skops.io as sio

        sio.dump(estimator, path)
    else:
        joblib.dump(estimator, path)
    return path


def load_sklearn(path: Path, *, safe: bool) -> Any:
    """Load an estimator file; with ``safe``, only skops files holding trusted types.

    Raises UnsafeArtifact when safe loading refuses the file, ArtifactError when unreadable.
    """
    if path.suffix == SKOPS_SUFFIX:
        import skops.io as sio

        untrusted = sio.get_untrusted_types(file=path)
        refused = [t for t in untrusted if t not in SAFE_EXTRA_TYPES]
        if safe and refused:
            raise UnsafeArtifact(
                f"{path.name} holds types that safe loading does not trust: {', '.join(refused)}"
            )
        return sio.load(path, trusted=untrusted or None)
    if safe:
        raise UnsafeArtifact(
            f"safe loading is on and {path.name} is a pickle, which runs code when loaded; "
            "register a .skops file instead (mlserve train --format skops)"
        )
    try:
        with warnings.catch_warnings():
            # A model pickled by another scikit-learn version still loads; we record it instead.
            warnings.simplefilter("ignore")
            return joblib.load(path)
    except Exception as exc:  # a corrupt pickle can raise nearly anything
        raise ArtifactError(f"cannot load {path.name}: {type(exc).__name__}: {exc}") from None


def estimator_facts(estimator: Any) -> ModelFacts:
    """What a scikit-learn-API estimator records about itself (``feature_names_in_``,
    ``n_features_in_``, ``classes_``, ``predict_proba``); XGBoost's and LightGBM's scikit-learn
    models record the same attributes."""
    names = getattr(estimator, "feature_names_in_", None)
    count = getattr(estimator, "n_features_in_", None)
    classes = getattr(estimator, "classes_", None)
    return ModelFacts(
        feature_names=None if names is None else tuple(str(n) for n in names),
        n_features=None if count is None else int(count),
        classes=() if classes is None else tuple(plain(c) for c in classes),
        has_proba=hasattr(estimator, "predict_proba"),
    )


def plain(value: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold (class labels go to the manifest)."""
    return value.item() if isinstance(value, np.generic) else value


def _quiet_arithmetic() -> np.errstate:
    """A context for model code: a value the input checker accepts (any finite float64, for a
    model that computes in float64) may overflow in the model's arithmetic (1e308 times a
    coefficient), and the infinities may meet (scikit-learn sums an array to test that it is
    finite: inf + -inf). The result decides the row (scikit-learn refuses the infinity it is
    handed next; an infinite score is still a prediction), so numpy's RuntimeWarning would only
    print on a terminal or in the server's log. A new context each time: one cannot be entered
    twice at once, and each holds for its own thread only."""
    return np.errstate(over="ignore", invalid="ignore")


class SklearnRuntime:
    """Any scikit-learn estimator or Pipeline; thread-safe for prediction."""

    framework: ClassVar[str] = "sklearn"
    needs_process: ClassVar[bool] = False

    def __init__(self, estimator: Any, signature: Signature) -> None:
        self._estimator = estimator
        self.signature = signature
        self._names = signature.feature_names
        self._wants_frame = hasattr(estimator, "feature_names_in_")
        self._numeric = [f.name for f in signature.inputs if f.kind != "categorical"]
        self._categorical = [f.name for f in signature.inputs if f.kind == "categorical"]
        self._has_proba = hasattr(estimator, "predict_proba")
        raw_classes = getattr(estimator, "classes_", None)
        self._classes: list[object] = [] if raw_classes is None else list(raw_classes)
        self._prefix, self._kernel = _kernel(estimator)
        # The kernels are a forest's or a linear classifier's (see _kernel_of).
        self._forest: ForestKernel | None = (
            None if self._kernel is None or isinstance(self._kernel, LinearKernel) else self._kernel
        )
        self._scales_with_threads = self._forest is not None and (
            self._prefix is None or _row_wise(self._prefix)
        )

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> SklearnRuntime:
        """Load the model file of a verified version folder."""
        return cls(load_sklearn(folder / manifest.model_file, safe=safe), manifest.signature)

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """Feature names and count, classes and probabilities, as the estimator records them."""
        return estimator_facts(load_sklearn(path, safe=safe))

    @property
    def estimator(self) -> Any:
        """The underlying scikit-learn object."""
        return self._estimator

    @property
    def has_proba(self) -> bool:
        """True when the estimator has ``predict_proba``."""
        return self._has_proba

    @property
    def classes(self) -> list[object]:
        """Class labels in ``predict_proba`` column order (empty for regressors)."""
        return self._classes

    @property
    def uses_forest_kernel(self) -> bool:
        """True when forest predictions skip scikit-learn's per-call overhead
        (``runtimes/forest.py``)."""
        return self._forest is not None

    @property
    def scales_with_threads(self) -> bool:
        """True for a forest on the forest kernel, bare or after row-wise transforms (what
        ``mlserve train`` builds: impute, scale, one-hot encode): trees walk rows in compiled
        code that releases the GIL, and each row's numbers are the same whatever rows share the
        call. Not for the linear kernel (BLAS sums differ in the last bit between a block and
        the whole, and a chunk's product is too quick to share), nor other transforms."""
        return self._scales_with_threads

    @property
    def uses_linear_kernel(self) -> bool:
        """True when linear-classifier predictions skip scikit-learn's per-call validation
        (``runtimes/linear.py``)."""
        return isinstance(self._kernel, LinearKernel)

    def predict(self, batch: Batch) -> np.ndarray:
        """Predict one output per row."""
        return self._call("predict", batch)

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Class probabilities; raises InvalidInput when the model has none."""
        if not self._has_proba:
            raise InvalidInput("this model does not give probabilities (no predict_proba)")
        return self._call("predict_proba", batch)

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` and ``predict_proba`` of the same rows, in one pass for a forest classifier
        on its kernel (its classes are the argmax of its probabilities, as scikit-learn picks
        them), else in two calls. Raises InvalidInput when the model has no probabilities."""
        if not self._has_proba:
            raise InvalidInput("this model does not give probabilities (no predict_proba)")
        kernel = self._forest
        if kernel is None or not kernel.is_classifier:
            return self.predict(batch), self.predict_proba(batch)
        with _quiet_arithmetic():
            rows, taken = self._kernel_rows(batch, kernel)
            if taken:
                probabilities = kernel.predict_proba(rows)
                return kernel.classes_of(probabilities), probabilities
            final = self._final_estimator
            return np.asarray(final.predict(rows)), np.asarray(final.predict_proba(rows))

    def _call(self, method: str, batch: Batch) -> np.ndarray:
        """``method`` of the kernel when it takes these rows, else of the estimator."""
        kernel = self._kernel
        with _quiet_arithmetic():
            if kernel is None or (method == "predict_proba" and not kernel.has_proba):
                return np.asarray(getattr(self._estimator, method)(self._prepare(batch)))
            rows, taken = self._kernel_rows(batch, kernel)
            return np.asarray(getattr(kernel if taken else self._final_estimator, method)(rows))

    @property
    def _final_estimator(self) -> Any:
        """The estimator the kernel stands for: the pipeline's last step, or the bare one."""
        return self._estimator if self._prefix is None else self._estimator[-1]

    def _kernel_rows(self, batch: Batch, kernel: ForestKernel | LinearKernel) -> tuple[Any, bool]:
        """What the final estimator sees for ``batch``, and whether ``kernel`` takes it."""
        if (
            self._prefix is None
            and isinstance(batch, np.ndarray)
            and batch.dtype == np.float64
            and batch.shape[-1] == len(self._names)
            and kernel.accepts(batch)
        ):
            # Float64 rows in signature order are what a frame of them turns back into below;
            # batch scoring hands over such matrices, and skipping the round trip saves a copy.
            return batch, True
        rows = self._prepare(batch)
        if self._prefix is not None:
            rows = self._prefix.transform(rows)
        # The kernel takes a frame of float64 columns as its array (scikit-learn converts it
        # the same way); the estimator, when the kernel does not take the rows, gets the frame
        # itself: fitted on one, it warns that an array "does not have valid feature names".
        if isinstance(rows, pd.DataFrame) and all(d == np.float64 for d in rows.dtypes):
            array = rows.to_numpy()
            return (array, True) if kernel.accepts(array) else (rows, False)
        return rows, isinstance(rows, np.ndarray) and kernel.accepts(rows)

    def _prepare(self, batch: Batch) -> Batch:
        """Put rows in signature order, as a frame when the model was fitted on one."""
        if isinstance(batch, pd.DataFrame):
            frame = _normalize(batch[self._names], self._numeric, self._categorical)
            return frame if self._wants_frame else frame.to_numpy(dtype=np.float64)
        array = np.asarray(batch)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] != len(self._names):
            raise InvalidInput(
                f"expected rows of {len(self._names)} features "
                f"({', '.join(self._names[:5])}{', …' if len(self._names) > 5 else ''}), "
                f"got shape {list(array.shape)}"
            )
        if not self._wants_frame and array.dtype.kind in "fiub":
            return array
        # Text and objects (stored rows) become typed columns first, as training had them.
        frame = _normalize(
            pd.DataFrame(array, columns=self._names), self._numeric, self._categorical
        )
        return frame if self._wants_frame else frame.to_numpy(dtype=np.float64)


def _kernel(estimator: Any) -> tuple[Any, ForestKernel | LinearKernel | None]:
    """The transforms before the final estimator (None for a bare one) and a kernel for it,
    or (None, None) when it is neither a forest nor a linear classifier the kernels take."""
    from sklearn.pipeline import Pipeline

    if type(estimator) is Pipeline and len(estimator.steps) > 1:
        kernel = _kernel_of(estimator.steps[-1][1])
        return (estimator[:-1], kernel) if kernel is not None else (None, None)
    return None, _kernel_of(estimator)


def _row_wise(step: Any) -> bool:
    """True when ``step`` transforms each row on its own, value by value (imputers, scalers,
    dense one-hot and ordinal encoders, and column transformers or pipelines of them), so a
    row comes out the same bits in a block of rows as in the whole batch."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        MaxAbsScaler,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        RobustScaler,
        StandardScaler,
    )

    if isinstance(step, str):
        return step in ("passthrough", "drop")
    kind = type(step)
    if kind is Pipeline:
        return all(_row_wise(inner) for _, inner in step.steps)
    if kind is ColumnTransformer:
        # A sparse output's density, and so its type, could differ between blocks.
        return not getattr(step, "sparse_output_", True) and all(
            _row_wise(inner) for _, inner, _ in step.transformers_
        )
    if kind is OneHotEncoder:
        return not step.sparse_output
    return kind in (
        SimpleImputer,
        StandardScaler,
        MinMaxScaler,
        MaxAbsScaler,
        RobustScaler,
        OrdinalEncoder,
    )


def _kernel_of(model: Any) -> ForestKernel | LinearKernel | None:
    if type(model).__name__ in FOREST_CLASS_NAMES:
        from mlserve.runtimes.forest import ForestKernel

        forest = ForestKernel.of(model)  # None for a same-named class that is not a forest
        if forest is not None:
            return forest
    return LinearKernel.of(model)


def _normalize(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numeric columns as float64, categoricals as text (NaN when missing), as training had them.

    Rows from the input checker (``mlserve.inputs``) already are; this serves callers that pass
    stored rows as they are (the reference sample behind drift checks). Judging a client's
    values is the checker's job, not the runtime's: a column that does not convert raises
    ValueError.
    """
    needs_cast = [c for c in numeric if frame[c].dtype != np.float64]
    if not needs_cast and not categorical:
        return frame
    frame = frame.copy()
    for column in categorical:
        frame[column] = frame[column].map(lambda v: np.nan if pd.isna(v) else str(v)).astype(object)
    for column in needs_cast:
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype(np.float64)
    return frame
