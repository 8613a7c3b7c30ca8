"""Importing an MLflow model: a local model folder, or any MLflow URI (``models:/churn/3``,
``runs:/RUN/model``) fetched from the tracking server MLflow itself is configured for
(``MLFLOW_TRACKING_URI``).

Which runtime serves it follows from its flavours, in this order:

- ``sklearn``: the inner model file (skops or pickle) with the scikit-learn runtime;
- ``xgboost``: the inner booster file with the XGBoost runtime;
- ``lightgbm``: the inner model file (booster text, or a pickled scikit-learn API model) with
  the LightGBM runtime; a scikit-learn API model saved as skops (MLflow's default for one)
  with the scikit-learn runtime, which reads skops;
- anything else, and a native flavour that ships its own code (``code_paths``): the whole
  folder with MLflow's pyfunc loader (framework ``mlflow``).

The ``MLmodel`` signature is the version's signature (the inner model adds its classes and
probabilities); data given with ``signature_from`` adds dtypes, categories and the reference
profile, and without it the input example, when the model has one, gives a small reference
profile. The version is tagged ``mlflow_source``, ``mlflow_flavor`` and ``mlflow_run_id``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlserve.errors import ArtifactError, InvalidInput, NotFound
from mlserve.runtimes import ModelFacts, runtime_class
from mlserve.runtimes.sklearn import SKOPS_SUFFIX
from mlserve.training.registration import Registration, register_model
from mlserve.types import Signature

if TYPE_CHECKING:
    from mlserve.registry import ModelVersion, RegistryStore
    from mlserve.runtimes.mlflow import MlflowModel

NATIVE_FLAVORS: dict[str, tuple[str, str]] = {
    "sklearn": ("sklearn", "pickled_model"),
    "xgboost": ("xgboost", "data"),
    "lightgbm": ("lightgbm", "data"),
}
"""Flavour -> (framework that serves it natively, the ``MLmodel`` key naming its model file)."""

PYFUNC_FLAVOR = "python_function"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
"""An MLflow URI (``models:/…``, ``runs:/…``, ``s3://…``); one letter is a Windows drive."""


@dataclass(frozen=True, slots=True)
class MlflowImport:
    """What to import and how to register it."""

    source: str
    """A local MLflow model folder, or an MLflow URI."""
    name: str
    alias: str | None = None
    signature_from: Path | None = None
    target: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class ImportedModel:
    """The registered version and the route the model took."""

    version: ModelVersion
    flavor: str
    """The MLflow flavour it was imported as."""
    framework: str
    """The mlserve runtime that serves it."""


@dataclass(frozen=True, slots=True)
class ImportRoute:
    """How an MLflow model is registered: as which flavour, by which runtime, from which path."""

    flavor: str
    framework: str
    path: Path
    """What is registered: the inner model file, or the whole folder."""


def import_mlflow_model(
    store: RegistryStore, request: MlflowImport, *, safe: bool, actor: str = ""
) -> ImportedModel:
    """Fetch (when ``request.source`` is a URI) and register an MLflow model.

    Raises MissingExtra without MLflow installed, InvalidInput for a path that is no MLflow
    model, NotFound for a URI MLflow does not know, ArtifactError for a model that cannot be
    served, UnsafeArtifact when safe loading refuses it (any pyfunc model, a pickled one).
    """
    runtime_class("mlflow")  # MissingExtra, naming the extra, before anything imports mlflow
    from mlserve.runtimes.mlflow import read_mlflow_model  # imports mlflow: after the check

    with tempfile.TemporaryDirectory(prefix="mlserve-import-") as scratch:
        folder = _local_folder(request.source, Path(scratch))
        described = read_mlflow_model(folder)
        route = choose_route(folder, described)
        facts = None if route.framework == "mlflow" else _native_facts(route, described, safe)
        tags = {"mlflow_source": _source_tag(request.source), "mlflow_flavor": route.flavor}
        if described.run_id:
            tags["mlflow_run_id"] = described.run_id
        registration = Registration(
            name=request.name,
            framework=route.framework,
            signature_from=request.signature_from,
            target=request.target,
            alias=request.alias,
            description=request.description,
            tags=tags,
            facts=facts,
        )
        version = register_model(store, route.path, registration, safe=safe, actor=actor)
    return ImportedModel(version, route.flavor, route.framework)


def choose_route(folder: Path, described: MlflowModel) -> ImportRoute:
    """The runtime for an MLflow model folder and what to register with it (see the module
    docstring for the order)."""
    for flavor, (framework, key) in NATIVE_FLAVORS.items():
        section = described.flavors.get(flavor)
        if section is None:
            continue
        if section.get("code"):
            break  # code shipped beside the model: only pyfunc puts it on the import path
        inner = folder / str(section.get(key, ""))
        if not section.get(key) or not inner.is_file():
            raise ArtifactError(f"the MLmodel's {flavor} flavour names no model file ({key})")
        # A skops file of LightGBM's (or XGBoost's) scikit-learn model, as MLflow saves one by
        # default: their runtimes read booster files and pickles, scikit-learn's reads skops.
        served_by = "sklearn" if inner.suffix == SKOPS_SUFFIX else framework
        return ImportRoute(flavor, served_by, inner)
    others = [f for f in described.flavors if f != PYFUNC_FLAVOR]
    if PYFUNC_FLAVOR not in described.flavors:
        raise ArtifactError(
            f"the MLflow model has no python_function flavour ({', '.join(others) or 'none'}) "
            "and none mlserve serves natively (sklearn, xgboost, lightgbm)"
        )
    return ImportRoute(others[0] if others else PYFUNC_FLAVOR, "mlflow", folder)


def _native_facts(route: ImportRoute, described: MlflowModel, safe: bool) -> ModelFacts:
    """The inner model's own facts, with the MLmodel signature and input example around them."""
    inner = runtime_class(route.framework).inspect(route.path, safe=safe)
    signature = described.signature
    if signature is None:
        return inner
    names = signature.feature_names
    if inner.feature_names is not None and inner.feature_names != tuple(names):
        if set(inner.feature_names) != set(names):
            raise ArtifactError(
                f"the MLmodel signature names the features {', '.join(names)} but the "
                f"{route.flavor} model was fitted on {', '.join(inner.feature_names)}"
            )
        by_name = {f.name: f for f in signature.inputs}
        # The model's column order: a scikit-learn model fitted on a frame insists on it.
        signature = replace(signature, inputs=tuple(by_name[n] for n in inner.feature_names))
        names = signature.feature_names
    elif inner.n_features is not None and inner.n_features != len(names):
        raise ArtifactError(
            f"the MLmodel signature has {len(names)} features but the {route.flavor} model "
            f"takes {inner.n_features}"
        )
    merged = Signature(
        inputs=signature.inputs,
        task="classification" if inner.classes else signature.task,
        outputs=("predict", "predict_proba") if inner.has_proba else ("predict",),
        classes=inner.classes,
        target=signature.target,
    )
    example = described.input_example
    return ModelFacts(
        feature_names=tuple(names),
        n_features=len(names),
        classes=inner.classes,
        has_proba=inner.has_proba,
        signature=merged,
        input_example=None if example is None else pd.DataFrame(example[names]),
    )


def _local_folder(source: str, scratch: Path) -> Path:
    """The MLflow model folder ``source`` names: a local folder (or its MLmodel file), or a
    URI downloaded into ``scratch``."""
    path = Path(source).expanduser()
    if path.exists():
        folder = path.parent if path.is_file() and path.name == "MLmodel" else path
        if not (folder / "MLmodel").is_file():
            raise InvalidInput(f"{source} is not an MLflow model folder (it has no MLmodel file)")
        return folder
    if not _URI.match(source):
        raise InvalidInput(
            f"{source}: no such folder, nor an MLflow URI (models:/NAME/VERSION, runs:/RUN/PATH)"
        )
    return _download(source, scratch)


def _download(uri: str, scratch: Path) -> Path:
    """Download an MLflow URI with MLflow's own client and configuration."""
    import mlflow.artifacts  # only after import_mlflow_model checked that MLflow is installed
    from mlflow.exceptions import MlflowException

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(scratch)))
    except MlflowException as exc:
        reason = _first_line(exc)
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise NotFound(f"MLflow has no {uri}: {reason}") from None
        raise ArtifactError(f"cannot download {uri} from MLflow: {reason}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot download {uri} from MLflow: {exc}") from None
    if not (local / "MLmodel").is_file():
        raise InvalidInput(f"{uri} is not an MLflow model (it has no MLmodel file)")
    return local


def _source_tag(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
