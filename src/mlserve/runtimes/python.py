"""Custom Python models: your own code around any model (pre- and post-processing).

A custom model is a folder:

``model.py``
    Defines ``class Model`` with

    - ``load(self, folder: pathlib.Path) -> None``: called once, with the (unpacked) folder, to
      read the model's files (a joblib file, a vocabulary, …);
    - ``predict(self, frame: pandas.DataFrame)``: one output per row of ``frame``, whose columns
      are the signature's features in signature order (numbers as float64, categories as text);
    - optionally ``predict_proba(self, frame)``, one row of class probabilities per input row,
      with a ``classes`` attribute (a list: the labels of its columns) — a classifier;
    - optionally a ``feature_names`` attribute (a list) naming the inputs, so registration needs
      no ``--signature-from`` data for the names.

    ``predict`` and ``predict_proba`` are called from several threads at once, as a
    scikit-learn model's are. ``model.py`` may import modules and packages beside it in the
    folder; import them when ``model.py`` is imported (at its top), as the folder is on the
    import path only then.
``requirements.txt`` (optional)
    The packages the code needs, one requirement a line (``scikit-learn>=1.4``). Nothing is
    installed: loading checks each against what is installed and refuses the model, naming
    every requirement not met.
anything else
    Files ``load`` reads.

Loading runs the folder's code, so safe loading refuses custom models outright.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import threading
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from packaging.requirements import InvalidRequirement, Requirement

from mlserve.errors import ArtifactError, InvalidInput, UnsafeArtifact
from mlserve.runtimes.archive import unpacked
from mlserve.runtimes.base import Batch, ModelFacts
from mlserve.runtimes.sklearn import plain
from mlserve.types import Signature, VersionManifest

MODEL_MODULE = "model.py"
REQUIREMENTS_FILE = "requirements.txt"

_IMPORTING = threading.Lock()
"""Held while a model.py is imported: its folder is on ``sys.path`` and its sibling modules'
names in ``sys.modules`` only for that long, and two models' siblings may share a name."""


class PythonRuntime:
    """A custom ``Model`` class from a folder's ``model.py`` (see the module docstring)."""

    framework: ClassVar[str] = "python"
    needs_process: ClassVar[bool] = False

    def __init__(self, model: Any, signature: Signature) -> None:
        self._model = model
        self.signature = signature
        self._has_proba = callable(getattr(model, "predict_proba", None))
        self._classes: list[object] = _classes_of(model)

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> PythonRuntime:
        """Unpack the version's zip and build its ``Model``; raises UnsafeArtifact under safe
        loading, ArtifactError when a requirement is not met or the code fails."""
        _refuse_when_safe(safe)
        model_folder = unpacked(folder / manifest.model_file, manifest.sha256)
        return cls(load_custom_model(model_folder), manifest.signature)

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """Build the model from the folder at ``path`` and read its ``feature_names``,
        ``classes`` and ``predict_proba``."""
        _refuse_when_safe(safe)
        if not path.is_dir():
            raise ArtifactError(f"{path} is not a custom Python model folder (with {MODEL_MODULE})")
        model = load_custom_model(path)
        names = getattr(model, "feature_names", None)
        return ModelFacts(
            feature_names=None if names is None else tuple(str(n) for n in names),
            n_features=None if names is None else len(names),
            classes=tuple(_classes_of(model)),
            has_proba=callable(getattr(model, "predict_proba", None)),
        )

    @property
    def model(self) -> Any:
        """The custom ``Model`` instance."""
        return self._model

    @property
    def has_proba(self) -> bool:
        """True when the model defines ``predict_proba``."""
        return self._has_proba

    @property
    def classes(self) -> list[object]:
        """The model's ``classes`` (empty when it has none)."""
        return self._classes

    @property
    def scales_with_threads(self) -> bool:
        """False: nothing says the custom code answers a block of rows as it answers them all."""
        return False

    def predict(self, batch: Batch) -> np.ndarray:
        """The model's ``predict`` on the rows as a frame with the signature's columns."""
        frame = signature_frame(batch, self.signature)
        return one_per_row(self._model.predict(frame), len(frame), "predict")

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """The model's ``predict_proba``; raises InvalidInput when it has none."""
        if not self._has_proba:
            raise InvalidInput("this model does not give probabilities (no predict_proba)")
        frame = signature_frame(batch, self.signature)
        probabilities = np.asarray(self._model.predict_proba(frame))
        if probabilities.ndim != 2 or probabilities.shape != (len(frame), len(self._classes)):
            raise ArtifactError(
                f"the model's predict_proba gave shape {list(probabilities.shape)} for "
                f"{len(frame)} rows and {len(self._classes)} classes"
            )
        return probabilities

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` and ``predict_proba``, in two calls (the code may compute them apart)."""
        return self.predict(batch), self.predict_proba(batch)


def load_custom_model(folder: Path) -> Any:
    """Check ``folder``'s requirements, import its ``model.py`` and return a loaded ``Model``.

    Raises ArtifactError naming the unmet requirements, or saying why the code failed.
    """
    source = folder / MODEL_MODULE
    if not source.is_file():
        raise ArtifactError(f"{folder} has no {MODEL_MODULE}")
    check_requirements(folder / REQUIREMENTS_FILE)
    module = _import_model_module(folder)
    model_class = getattr(module, "Model", None)
    if not isinstance(model_class, type):
        raise ArtifactError(f"{MODEL_MODULE} defines no class Model")
    for method in ("load", "predict"):
        if not callable(getattr(model_class, method, None)):
            raise ArtifactError(f"{MODEL_MODULE}: class Model has no {method} method")
    try:
        model = model_class()
        model.load(folder)
    except Exception as exc:  # the model's own code: anything it raises is the model's failure
        raise ArtifactError(
            f"{MODEL_MODULE}: Model failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if callable(getattr(model, "predict_proba", None)) and not _classes_of(model):
        raise ArtifactError(
            f"{MODEL_MODULE}: Model has predict_proba but no classes attribute "
            "(the labels of its probability columns)"
        )
    return model


def check_requirements(path: Path) -> None:
    """Raise ArtifactError naming each requirement in the file at ``path`` that the installed
    packages do not meet; a missing file declares none."""
    if not path.is_file():
        return
    unmet = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise ArtifactError(f"{REQUIREMENTS_FILE} line {number}: {exc}") from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # meant for another platform or Python
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(f"{line} (not installed)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{line} ({requirement.name} {installed} is installed)")
    if unmet:
        raise ArtifactError(f"the model's requirements are not met: {'; '.join(unmet)}")


def _import_model_module(folder: Path) -> ModuleType:
    """Import ``folder/model.py`` under a name of its own, with the folder importable meanwhile.

    The module stays in ``sys.modules`` (pickle and dataclasses look classes up there); the
    folder leaves ``sys.path`` and its sibling modules leave ``sys.modules`` again, so another
    model's ``features.py`` is never taken for this one's.
    """
    name = f"mlserve_custom_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, folder / MODEL_MODULE)
    if spec is None or spec.loader is None:
        raise ArtifactError(f"cannot import {folder / MODEL_MODULE}")
    module = importlib.util.module_from_spec(spec)
    siblings = _sibling_modules(folder)
    with _IMPORTING:
        hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if _is_among(n, siblings)}
        sys.modules[name] = module
        sys.path.insert(0, str(folder))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the model's own code: anything it raises is its failure
            del sys.modules[name]
            raise ArtifactError(
                f"{MODEL_MODULE} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            sys.path.remove(str(folder))
            for imported in [n for n in list(sys.modules) if _is_among(n, siblings)]:
                del sys.modules[imported]
            sys.modules.update(hidden)
    return module


def _sibling_modules(folder: Path) -> frozenset[str]:
    """Top-level module names the folder's files would be imported as."""
    names = {p.stem for p in folder.glob("*.py") if p.name != MODEL_MODULE}
    names.update(p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    return frozenset(names)


def _is_among(module: str, tops: frozenset[str]) -> bool:
    return module.split(".", 1)[0] in tops


def signature_frame(batch: Batch, signature: Signature) -> pd.DataFrame:
    """Rows as a frame of the signature's columns in its order: numeric and boolean features
    as float64, categorical ones as text (None when missing).

    Takes a float64 matrix in signature order (what the input checker gives an all-numeric
    model), a frame holding the signature's columns, or stored rows of any dtype.
    """
    names = signature.feature_names
    if isinstance(batch, pd.DataFrame):
        missing = [n for n in names if n not in batch.columns]
        if missing:
            raise InvalidInput(f"rows lack the model's feature(s): {', '.join(missing)}")
        frame = batch[names]
    else:
        array = np.asarray(batch)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] != len(names):
            raise InvalidInput(
                f"expected rows of {len(names)} features, got shape {list(array.shape)}"
            )
        if array.dtype == np.float64:
            return pd.DataFrame(array, columns=names)
        frame = pd.DataFrame(array, columns=names)
    frame = frame.copy()
    for feature in signature.inputs:
        column = frame[feature.name]
        if feature.kind == "categorical":
            frame[feature.name] = column.map(lambda v: None if pd.isna(v) else str(v)).astype(
                object
            )
        elif column.dtype != np.float64:
            frame[feature.name] = pd.to_numeric(column, errors="raise").astype(np.float64)
    return frame.reset_index(drop=True)


def one_per_row(outputs: Any, rows: int, method: str) -> np.ndarray:
    """A model's answers as a 1-D array of ``rows`` values: a one-column frame or a column
    vector is flattened; anything else of the wrong shape raises ArtifactError."""
    if isinstance(outputs, pd.DataFrame):
        if outputs.shape[1] != 1:
            raise ArtifactError(
                f"the model's {method} gave {outputs.shape[1]} columns "
                f"({', '.join(map(str, outputs.columns[:5]))}); one output per row is served"
            )
        outputs = outputs.iloc[:, 0]
    array = np.asarray(outputs)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) != rows:
        raise ArtifactError(
            f"the model's {method} gave shape {list(array.shape)} for {rows} rows; "
            "one output per row is served"
        )
    return array


def _classes_of(model: Any) -> list[object]:
    """The model's ``classes`` as plain values (a numpy array of labels is fine too)."""
    classes = getattr(model, "classes", None)
    return [] if classes is None else [plain(c) for c in classes]


def _refuse_when_safe(safe: bool) -> None:
    if safe:
        raise UnsafeArtifact("custom Python models run their own code; safe loading refuses them")
