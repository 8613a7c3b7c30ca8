"""The Open Inference Protocol below its doors: what REST (`routes_v2`) and gRPC
(`serving.grpc`) both answer once a request is decoded into `protocol.Tensor` objects, so the
two agree on every rule: which outputs, how rows are checked and predicted, what metadata says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlserve import __version__
from mlserve.monitoring.predlog import PendingPrediction
from mlserve.serving.inference import PREDICT, PREDICT_PROBA
from mlserve.serving.models import ModelManager, VersionStatus
from mlserve.serving.protocol import InferRequest, datatype_of
from mlserve.serving.served import ServedVersion

SERVER_NAME = "mlserve"
SERVER_VERSION = __version__
EXTENSIONS = ["binary_tensor_data", "model_repository"]
"""Protocol extensions this server speaks."""


@dataclass(frozen=True, slots=True)
class Inferred:
    """A request's answer: each requested output as a tensor the protocol can carry, in the
    order asked, and what the version predicted (its prediction-log item)."""

    outputs: list[tuple[str, np.ndarray]]
    logged: PendingPrediction | None


async def infer(served: ServedVersion, request: InferRequest, route: str) -> Inferred:
    """Check the requested outputs and the rows, predict, and shape the outputs; raises what
    `ServedVersion.predict` raises (InvalidInput naming the first rejected row, ...)."""
    outputs = served.check_outputs([o.name for o in request.outputs])
    checked = served.schema.from_tensors(request.inputs)
    prediction = await served.predict(checked, outputs, route=route)
    results = prediction.outputs
    return Inferred([(name, as_tensor(results[name])) for name in outputs], prediction.logged)


def as_tensor(values: np.ndarray) -> np.ndarray:
    """Predictions as a tensor the protocol can carry (labels of objects become strings)."""
    if values.dtype.kind == "O":
        return np.asarray([str(v) for v in values], dtype=object)
    if values.dtype.kind == "U":
        return values.astype(object)
    return values


def not_ready_reason(draining: bool, models: ModelManager) -> str:
    """Why the server is not ready, in a few words."""
    pending = [f"{s.name}:{s.version} {s.state}" for s in models.statuses() if not s.is_ready]
    return "shutting down" if draining else "; ".join(pending) or "no models"


def model_not_ready(status: VersionStatus) -> str:
    """Why a model version is not ready."""
    reason = f": {status.reason}" if status.reason else ""
    return f"model {status.name!r} is {status.state}{reason}"


def model_metadata(
    models: ModelManager, status: VersionStatus, served: ServedVersion | None
) -> dict[str, Any]:
    """A model's metadata as the protocol's JSON names it: inputs, outputs, versions, platform,
    and parameters (state, features, classes); failed models say why."""
    meta: dict[str, Any] = {
        "name": status.name,
        "versions": models.versions(status.name),
        "platform": status.framework or "unknown",
        "inputs": [],
        "outputs": [],
        "parameters": {"state": status.state, "version": status.version},
    }
    if status.reason:
        meta["parameters"]["reason"] = status.reason
    if served is None:
        return meta
    signature = served.runtime.signature
    features = [
        {
            "name": f.name,
            "datatype": "BYTES" if f.kind == "categorical" else "FP64",
            "shape": [-1],
            "parameters": {
                "kind": f.kind,
                "missing_accepted": served.schema.checker.takes_missing(f.name),
                **({"categories": list(f.categories)} if f.categories else {}),
            },
        }
        for f in signature.inputs
    ]
    if served.schema.all_numeric:
        meta["inputs"] = [
            {"name": served.schema.input_name, "datatype": "FP64", "shape": [-1, len(features)]}
        ]
        meta["parameters"]["input_layout"] = (
            "one 2-D tensor [rows, features], or one 1-D tensor per feature"
        )
    else:
        meta["inputs"] = features
        meta["parameters"]["input_layout"] = (
            "one 1-D tensor per feature (BYTES for categorical ones)"
        )
    meta["parameters"]["features"] = features
    meta["parameters"]["task"] = signature.task
    outputs = [{"name": PREDICT, "datatype": _predict_datatype(served), "shape": [-1]}]
    if PREDICT_PROBA in served.outputs:
        outputs.append(
            {"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, len(served.class_labels)]}
        )
        meta["parameters"]["classes"] = served.class_labels
    meta["outputs"] = outputs
    return meta


def _predict_datatype(served: ServedVersion) -> str:
    """What ``predict`` returns: class labels' type for classifiers, FP64 for regressors."""
    classes = served.runtime.classes
    if not classes:
        return "FP64"
    return datatype_of(np.asarray(as_tensor(np.asarray(classes))))
