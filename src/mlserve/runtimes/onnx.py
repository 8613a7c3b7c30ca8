"""ONNX runtime: any ONNX model with tabular inputs, run by onnxruntime on the CPU.

A model takes either one 2-D numeric tensor (rows in signature order, float32 or float64) or
one input per feature, named after the feature (``[N, 1]`` or ``[N]``; numbers, or text for a
categorical, a missing text value given as ""). Its answers are found among its outputs: the
labels (``label``), the probabilities (``probabilities``, a ``[N, k]`` tensor, or ZipMap's list
of dicts, turned into a tensor in class order), or for a regressor its one output.

Class labels come from the model: what ``mlserve convert`` records in its metadata, else the
labels of its ZipMap or classifier node (read when the ``onnx`` package is installed), else
0..k-1. ONNX files are data: safe loading accepts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnxruntime as ort
import pandas as pd

from mlserve.errors import ArtifactError, InvalidInput
from mlserve.runtimes.base import Batch, ModelFacts
from mlserve.types import Signature, VersionManifest

INTRA_OP_THREADS = 1
"""Threads one ``run`` may use. Measured on a 2-core machine (onnxruntime 1.32, a 100-tree
random forest on 20 features): one row took 12.6 µs with 1 thread and 18.2 µs with 2; 100 rows
446 µs and 416 µs. A logistic regression: 6.1 against 6.4 µs for one row, 7.3 against 8.7 µs
for 100. A second thread slows small requests and buys 7% on large ones while taking a core
that serving's other inference workers (each calling ``run`` on its own thread) need."""

CLASSES_KEY = "mlserve.classes"
"""Metadata key holding the class labels (a JSON list, in probability column order)."""
SIGNATURE_KEY = "mlserve.signature"
"""Metadata key holding the whole signature (JSON), written by ``mlserve convert``."""

_TENSOR_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}
_LABEL_NAMES = ("label", "output_label", "labels", "predicted_label")
_PROBA_NAMES = ("probabilities", "output_probability", "probability", "proba")
_CLASSIFIER_OPS = ("ZipMap", "TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")
_ROW_WISE_OPS = frozenset(
    {
        "TreeEnsembleClassifier",
        "TreeEnsembleRegressor",
        "TreeEnsemble",
        "Scaler",
        "Imputer",
        "OneHotEncoder",
        "LabelEncoder",
        "Cast",
        "CastLike",
        "Concat",
        "Identity",
        "Reshape",
        "Flatten",
        "ZipMap",
        "ArgMax",
        "ArrayFeatureExtractor",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Where",
        "Equal",
        "Less",
        "Greater",
        "Not",
        "And",
        "Or",
        "IsNaN",
    }
)
"""Operators that compute each row on its own with the same arithmetic whatever rows share
the call (with one intra-op thread, trees are summed in one order)."""


@dataclass(frozen=True, slots=True)
class _Column:
    """One model input fed from one feature."""

    name: str
    dtype: type[np.generic] | None
    """None: text."""
    is_column: bool
    """True for ``[N, 1]``, False for ``[N]``."""


@dataclass(frozen=True, slots=True)
class _Graph:
    """What a session's inputs, outputs and metadata say, read once."""

    layout: Literal["tensor", "columns"]
    tensor_dtype: type[np.generic]
    columns: tuple[_Column, ...]
    n_features: int | None
    label_output: str | None
    proba_output: str | None
    proba_is_zipmap: bool
    value_output: str
    classes: tuple[Any, ...]
    signature: Signature | None
    is_row_wise: bool


def session_options() -> ort.SessionOptions:
    """Options for serving: INTRA_OP_THREADS threads, no inter-op pool, no spinning.

    Idle onnxruntime threads spin for a while waiting for work; with several inference workers
    each running a model, spinning threads would take the cores the others need.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: warnings would print on the server's stderr
    return options


def open_session(model: bytes, where: str) -> ort.InferenceSession:
    """An onnxruntime session on the CPU with :func:`session_options`; raises ArtifactError
    naming ``where`` (the file) when the bytes are not a model onnxruntime can run."""
    try:
        return ort.InferenceSession(
            model, sess_options=session_options(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own (pybind) errors for bad files
        raise ArtifactError(f"cannot load {where}: {str(exc).strip().splitlines()[0]}") from None


class OnnxRuntime:
    """An ONNX model with tabular inputs; thread-safe (onnxruntime sessions are)."""

    framework: ClassVar[str] = "onnx"
    needs_process: ClassVar[bool] = False

    def __init__(self, session: ort.InferenceSession, signature: Signature, model: Any) -> None:
        """Serve ``session`` under ``signature``; ``model`` is its parsed ONNX graph (None when
        the onnx package is missing). Raises ArtifactError when the two do not fit."""
        self._session = session
        self.signature = signature
        self._names = signature.feature_names
        self._graph = _read_graph(session, model)
        graph = self._graph
        if graph.layout == "tensor":
            if graph.n_features is not None and graph.n_features != len(self._names):
                raise ArtifactError(
                    f"the ONNX model takes {graph.n_features} features, the signature "
                    f"names {len(self._names)}"
                )
        else:
            missing = [c.name for c in graph.columns if c.name not in self._names]
            if missing:
                raise ArtifactError(
                    f"the ONNX model's input(s) {', '.join(missing)} are not in the signature"
                )
        classes = graph.classes or signature.classes
        if not classes and graph.proba_output is not None:
            classes = tuple(range(_proba_width(session, graph.proba_output) or 0))
        self._classes: list[object] = list(classes)

    @classmethod
    def load(cls, folder: Path, manifest: VersionManifest, *, safe: bool) -> OnnxRuntime:
        """Load the model file of a verified version folder (``safe`` changes nothing: an ONNX
        file is data, it runs no code of its own)."""
        model = (folder / manifest.model_file).read_bytes()
        return cls(open_session(model, manifest.model_file), manifest.signature, _parse(model))

    @classmethod
    def inspect(cls, path: Path, *, safe: bool) -> ModelFacts:
        """Feature names (one input per feature) or count (one tensor), classes and whether
        it gives probabilities; the whole signature when ``mlserve convert`` wrote it."""
        if path.is_dir():
            raise ArtifactError(f"{path} is a folder, not an ONNX model file")
        model = path.read_bytes()
        session = open_session(model, path.name)
        graph = _read_graph(session, _parse(model))
        names = tuple(c.name for c in graph.columns) if graph.layout == "columns" else None
        classes = graph.classes
        if not classes and graph.proba_output is not None:
            classes = tuple(range(_proba_width(session, graph.proba_output) or 0))
        return ModelFacts(
            feature_names=names,
            n_features=len(names) if names is not None else graph.n_features,
            classes=classes,
            has_proba=graph.proba_output is not None,
            signature=graph.signature,
        )

    @property
    def has_proba(self) -> bool:
        """True when the model has a probabilities output."""
        return self._graph.proba_output is not None

    @property
    def classes(self) -> list[object]:
        """Class labels in probability column order (empty for regressors)."""
        return self._classes

    @property
    def scales_with_threads(self) -> bool:
        """True when every operator of the graph computes rows one by one in exact arithmetic
        (trees, scalers, imputers, encoders; see ``_ROW_WISE_OPS``): onnxruntime releases the
        GIL while it runs. Not for matrix products (their kernels change with the row count,
        and so may the last bit) nor when the graph could not be read (no onnx package)."""
        return self._graph.is_row_wise

    def predict(self, batch: Batch) -> np.ndarray:
        """Predict one output per row: the label of a classifier, the value of a regressor."""
        graph = self._graph
        if graph.label_output is None and graph.proba_output is not None:
            return self.predict_with_proba(batch)[0]
        (values,) = self._run([graph.value_output], batch)
        return _one_per_row(values)

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Class probabilities; raises InvalidInput when the model has none."""
        return self.predict_with_proba(batch)[1]

    def predict_with_proba(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities from one run; raises InvalidInput when the model gives no
        probabilities."""
        graph = self._graph
        if graph.proba_output is None:
            raise InvalidInput("this model does not give probabilities (no probabilities output)")
        if graph.label_output is None:
            (raw,) = self._run([graph.proba_output], batch)
            probabilities = self._probabilities(raw)
            labels = np.asarray(self._classes, dtype=object)[probabilities.argmax(axis=1)]
            return _plain_labels(labels), probabilities
        labels, raw = self._run([graph.label_output, graph.proba_output], batch)
        return _one_per_row(labels), self._probabilities(raw)

    def _probabilities(self, raw: Any) -> np.ndarray:
        if self._graph.proba_is_zipmap:
            return np.array([[row[c] for c in self._classes] for row in raw], dtype=np.float64)
        return np.asarray(raw, dtype=np.float64)

    def _run(self, outputs: list[str], batch: Batch) -> list[Any]:
        feeds = self._feeds(batch)
        try:
            return list(self._session.run(outputs, feeds))
        except Exception as exc:  # onnxruntime's own errors: a value the model cannot take
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInput(f"the ONNX model refused the rows: {message}") from None

    def _feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        """Model inputs for rows in signature order (an array) or by name (a frame)."""
        graph = self._graph
        if isinstance(batch, pd.DataFrame):
            frame = batch
        else:
            array = np.asarray(batch)
            if array.ndim == 1:
                array = array.reshape(1, -1)
            if array.ndim != 2 or array.shape[1] != len(self._names):
                raise InvalidInput(
                    f"expected rows of {len(self._names)} features "
                    f"({', '.join(self._names[:5])}{', …' if len(self._names) > 5 else ''}), "
                    f"got shape {list(array.shape)}"
                )
            if graph.layout == "tensor":
                return {graph.columns[0].name: _numbers(array, graph.tensor_dtype)}
            frame = pd.DataFrame(array, columns=self._names, copy=False)
        if graph.layout == "tensor":
            rows = frame[self._names].to_numpy()
            return {graph.columns[0].name: _numbers(rows, graph.tensor_dtype)}
        feeds = {}
        for column in graph.columns:
            values = frame[column.name].to_numpy()
            if column.dtype is None:
                fed = np.array(["" if _is_missing(v) else str(v) for v in values], dtype=object)
            else:
                fed = _numbers(values, column.dtype)
            feeds[column.name] = fed.reshape(-1, 1) if column.is_column else fed
        return feeds


def _numbers(values: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """``values`` as the model's number type (through float64, so text and objects holding
    numbers convert as the signature's float64 features do)."""
    if values.dtype == dtype:
        return values
    if values.dtype.kind not in "fiub":
        values = (
            pd.to_numeric(pd.Series(values.ravel()), errors="raise")
            .to_numpy(dtype=np.float64)
            .reshape(values.shape)
        )
    return values.astype(dtype)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _one_per_row(values: Any) -> np.ndarray:
    """A ``[N, 1]`` output as ``[N]``; numbers as float64 or int64, labels as they come."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.dtype == np.float32:
        array = array.astype(np.float64)
    return _plain_labels(array)


def _plain_labels(labels: np.ndarray) -> np.ndarray:
    """Object arrays of numbers as numbers (labels taken from a class list)."""
    if labels.dtype == object and len(labels) and all(isinstance(v, int) for v in labels):
        return labels.astype(np.int64)
    return labels


def _proba_width(session: ort.InferenceSession, name: str) -> int | None:
    """How many classes a probabilities tensor has, when its shape says."""
    for output in session.get_outputs():
        if output.name == name and len(output.shape) == 2 and isinstance(output.shape[1], int):
            return int(output.shape[1])
    return None


def _parse(model: bytes) -> Any:
    """The ONNX graph, to read class labels and operators from; None without the onnx package
    (onnxruntime alone runs a model but does not show its nodes)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        return onnx.load_model_from_string(model)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ArtifactError(f"not an ONNX model: {exc}") from None


def _read_graph(session: ort.InferenceSession, model: Any) -> _Graph:
    """Inputs, outputs, classes and signature of a session (and of its parsed model)."""
    inputs = session.get_inputs()
    if not inputs:
        raise ArtifactError("the ONNX model has no inputs")
    first = inputs[0]
    is_tensor = (
        len(inputs) == 1
        and first.type in _TENSOR_DTYPES
        and len(first.shape) == 2
        and first.shape[1] != 1
    )
    columns = tuple(_column(i) for i in inputs)
    outputs = session.get_outputs()
    names = [o.name for o in outputs]
    proba = next((n for n in names if n in _PROBA_NAMES), None)
    zipmap = next((o.name for o in outputs if o.type.startswith("seq(map(")), None)
    proba = zipmap or proba
    if proba is None and len(outputs) == 2 and len(outputs[1].shape) == 2:
        proba = outputs[1].name
    label = next((n for n in names if n in _LABEL_NAMES), None)
    if label is None and proba is not None and names[0] != proba:
        label = names[0]
    metadata = session.get_modelmeta().custom_metadata_map
    signature = _metadata_signature(metadata)
    classes: tuple[Any, ...] = ()
    if proba is not None:
        classes = _metadata_classes(metadata) or _node_classes(model)
        if not classes and signature is not None:
            classes = signature.classes
    width = first.shape[1] if is_tensor else None
    return _Graph(
        layout="tensor" if is_tensor else "columns",
        tensor_dtype=_TENSOR_DTYPES.get(first.type, np.float32),
        columns=columns,
        n_features=width if isinstance(width, int) else None,
        label_output=label,
        proba_output=proba,
        proba_is_zipmap=zipmap is not None,
        value_output=label or names[0],
        classes=classes,
        signature=signature,
        is_row_wise=model is not None and {n.op_type for n in model.graph.node} <= _ROW_WISE_OPS,
    )


def _column(node_arg: Any) -> _Column:
    if node_arg.type == "tensor(string)":
        dtype = None
    elif node_arg.type in _TENSOR_DTYPES:
        dtype = _TENSOR_DTYPES[node_arg.type]
    else:
        raise ArtifactError(
            f"the ONNX model's input {node_arg.name!r} is a {node_arg.type}: only numeric and "
            "text tensors are tabular inputs"
        )
    return _Column(node_arg.name, dtype, len(node_arg.shape) == 2)


def _metadata_signature(metadata: dict[str, str]) -> Signature | None:
    text = metadata.get(SIGNATURE_KEY)
    if not text:
        return None
    try:
        return Signature.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ArtifactError(f"the ONNX model's {SIGNATURE_KEY} metadata is broken: {exc}") from None


def _metadata_classes(metadata: dict[str, str]) -> tuple[Any, ...]:
    text = metadata.get(CLASSES_KEY)
    if not text:
        return ()
    try:
        classes = json.loads(text)
    except ValueError as exc:
        raise ArtifactError(f"the ONNX model's {CLASSES_KEY} metadata is broken: {exc}") from None
    return tuple(classes) if isinstance(classes, list) else ()


def _node_classes(model: Any) -> tuple[Any, ...]:
    """Class labels of the model's ZipMap, else of its one classifier node."""
    if model is None:
        return ()
    nodes = [n for n in model.graph.node if n.op_type in _CLASSIFIER_OPS]
    nodes.sort(key=lambda n: n.op_type != "ZipMap")
    for node in nodes:
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return tuple(s.decode("utf-8") for s in attribute.strings)
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return tuple(int(i) for i in attribute.ints)
    return ()
