"""Pick the runtime for a version folder by its manifest's framework, after verifying it.

Runtimes other than scikit-learn's live in optional extras (``mlserve[xgboost]``, …): their
module is imported only when a model of that framework is registered or loaded, and a missing
package is one line naming the extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from mlserve.errors import ArtifactError, InvalidInput, MissingExtra
from mlserve.runtimes.base import Runtime
from mlserve.types import verify_artifact


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """Where a framework's runtime lives and what installing it takes."""

    module: str
    """Module under ``mlserve.runtimes`` holding the runtime class."""
    class_name: str
    extra: str | None
    """The extra that installs its packages (None: always installed)."""
    packages: tuple[str, ...] = ()
    """Top-level modules the runtime imports; missing ones mean the extra is missing."""
    suffixes: tuple[str, ...] = ()
    """Model file suffixes that name this framework when ``--framework`` is not given."""


RUNTIMES: dict[str, RuntimeSpec] = {
    "sklearn": RuntimeSpec(
        "sklearn", "SklearnRuntime", None, suffixes=(".joblib", ".pkl", ".pickle", ".skops")
    ),
    "xgboost": RuntimeSpec(
        "xgboost", "XGBoostRuntime", "xgboost", ("xgboost",), suffixes=(".json", ".ubj")
    ),
    "lightgbm": RuntimeSpec(
        "lightgbm", "LightGBMRuntime", "lightgbm", ("lightgbm",), suffixes=(".txt", ".lgb")
    ),
    "onnx": RuntimeSpec("onnx", "OnnxRuntime", "onnx", ("onnxruntime",), suffixes=(".onnx",)),
    "mlflow": RuntimeSpec("mlflow", "MlflowRuntime", "mlflow", ("mlflow",)),
    "python": RuntimeSpec("python", "PythonRuntime", None),
}
"""Framework name -> where its runtime lives; a new framework adds one module and one line."""

_PICKLE_FRAMEWORKS = {"xgboost": "xgboost", "lightgbm": "lightgbm"}
"""Top-level package of a pickled estimator's class -> the framework that serves it."""


def runtime_class(framework: str) -> type[Runtime]:
    """The runtime class for ``framework``, imported now.

    Raises InvalidInput for an unknown framework, MissingExtra when its packages are not
    installed.
    """
    spec = RUNTIMES.get(framework)
    if spec is None:
        raise InvalidInput(f"unknown framework {framework!r}; known: {', '.join(sorted(RUNTIMES))}")
    for package in spec.packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingExtra(
                f"the {framework} runtime needs the {package} package: "
                f"pip install 'mlserve[{spec.extra}]'"
            ) from None
    module = importlib.import_module(f"mlserve.runtimes.{spec.module}")
    runtime: type[Runtime] = getattr(module, spec.class_name)
    return runtime


def detect_framework(path: Path) -> str:
    """The framework a model file or folder is for, judged from its name and layout.

    A folder holding an ``MLmodel`` file is an MLflow model; one holding ``model.py`` a custom
    Python model. A pickle is scikit-learn's unless its class comes from XGBoost or LightGBM
    (see :func:`pickled_framework`). Raises InvalidInput when nothing tells.
    """
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return "mlflow"
        if (path / "model.py").is_file():
            return "python"
        raise InvalidInput(
            f"{path} is a folder but neither an MLflow model (no MLmodel file) nor a custom "
            "Python model (no model.py)"
        )
    suffix = path.suffix.lower()
    for framework, spec in RUNTIMES.items():
        if suffix in spec.suffixes:
            return framework
    raise InvalidInput(f"cannot tell the framework of {path.name} from its name; use --framework")


def pickled_framework(estimator: object) -> str:
    """The framework that serves an unpickled estimator: XGBoost's and LightGBM's scikit-learn
    models go to their own runtimes (which set the booster's threads), anything else to
    scikit-learn's."""
    package = type(estimator).__module__.split(".", 1)[0]
    return _PICKLE_FRAMEWORKS.get(package, "sklearn")


def load_runtime(
    folder: Path, *, expected_sha256: str | None = None, safe: bool = False
) -> Runtime:
    """Verify a version folder's sha256 and load it with its framework's runtime.

    Raises ArtifactIntegrityError on a changed file, ArtifactError for an unknown framework or
    an unreadable file, MissingExtra when the framework's packages are not installed,
    UnsafeArtifact when ``safe`` refuses it.
    """
    manifest = verify_artifact(folder, expected_sha256)
    if manifest.framework not in RUNTIMES:
        raise ArtifactError(
            f"no runtime for framework {manifest.framework!r} (known: {', '.join(sorted(RUNTIMES))})"
        )
    return runtime_class(manifest.framework).load(folder, manifest, safe=safe)
