"""A small client for an mlserve server: DataFrames in, DataFrames out, over the Open Inference
Protocol's binary tensors.

Each feature travels as its own tensor, typed as the model's metadata asks (FP64 for numeric and
boolean features, BYTES for categorical ones); the metadata is fetched once per model and kept
for the client's life. The server checks the rows, as it checks every request, and its refusals
come back as the errors of ``mlserve.errors`` with the server's own message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import numpy as np
import pandas as pd

from mlserve.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    MlserveError,
    NotFound,
    NotReady,
    Overloaded,
    RateLimited,
    Unauthorized,
)
from mlserve.sdk.columns import as_float64, as_texts, is_numeric
from mlserve.sdk.tensors import HEADER_LENGTH, InputTensor, decode_response, encode_request

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
PREDICTION_COLUMN = "prediction"
PROBA_PREFIX = "proba_"
"""Result columns, named as `mlserve predict` and batch jobs name theirs: ``prediction``, then
``proba_<class>`` per class."""

ERRORS: dict[int, type[MlserveError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    422: InvalidInput,
    429: RateLimited,
    504: DeadlineExceeded,
}
"""A server's error status -> the error raised here: `serving/errors.py`'s table read backwards
(503 is Overloaded, with the server's Retry-After; any other status is MlserveError)."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A feature as a model's metadata describes it."""

    name: str
    datatype: str
    """FP64 or BYTES."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a served model takes and gives, from its metadata."""

    name: str
    features: tuple[FeatureSpec, ...]
    classes: tuple[Any, ...]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> ModelSpec:
        """Parse ``GET /v2/models/{name}``; raises NotReady for a model that is not loaded
        (its metadata then lists no features)."""
        parameters = metadata.get("parameters") or {}
        features = parameters.get("features")
        if not features:
            reason = parameters.get("reason") or parameters.get("state") or "not loaded"
            raise NotReady(f"model {metadata.get('name')!r} is not ready: {reason}")
        return cls(
            name=str(metadata.get("name")),
            features=tuple(FeatureSpec(str(f["name"]), str(f["datatype"])) for f in features),
            classes=tuple(parameters.get("classes") or ()),
        )


class Client:
    """Talks to one mlserve server; use it as a context manager, or call ``close``.

    ``api_key`` is sent as ``Authorization: Bearer <key>``; ``timeout_s`` bounds each request.
    Thread-safe. A server that cannot be reached raises httpx's TransportError.
    """

    def __init__(self, url: str, *, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self._specs: dict[tuple[str, str | None], ModelSpec] = {}

    def ready(self) -> bool:
        """True when the server has loaded and warmed every model it serves."""
        return self._http.get("/v2/health/ready").status_code == 200

    def models(self) -> list[dict[str, Any]]:
        """Every model version the server serves, with its state (``GET /v1/models``)."""
        models: list[dict[str, Any]] = self._get("/v1/models")["models"]
        return models

    def metadata(self, name: str, *, version: str | int | None = None) -> dict[str, Any]:
        """A model's Open Inference Protocol metadata: inputs, outputs, versions, features,
        classes and state."""
        path = f"/v2/models/{name}" if version is None else f"/v2/models/{name}/versions/{version}"
        metadata: dict[str, Any] = self._get(path)
        return metadata

    def predict(
        self,
        name: str,
        frame: pd.DataFrame,
        *,
        version: str | int | None = None,
        outputs: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Predict every row of ``frame`` (columns named by feature) with the model ``name``
        (the version the server routes to, or ``version``).

        ``outputs`` names the protocol outputs to return: ``predict`` (the default) and, for a
        classifier, ``predict_proba``. The result is indexed like ``frame``, with a
        ``prediction`` column and a ``proba_<class>`` column per class.

        Only the model's feature columns are sent. Raises InvalidInput with the server's
        reason (``row 3: feature 'plan' is missing, …``), NotFound for a model or version the
        server does not serve, Unauthorized or Forbidden for a missing or wrong API key,
        Overloaded when the server is busy (its ``retry_after_s`` says when to try again).
        """
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInput(f"expected a pandas DataFrame, got {type(frame).__name__}")
        if len(frame) == 0:
            raise InvalidInput("no rows to predict")
        if outputs is None:
            outputs = (PREDICT,)
        wanted = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        spec = self._spec(name, version)
        tensors = [_tensor(f, frame[f.name]) for f in spec.features if f.name in frame.columns]
        if not tensors:
            raise InvalidInput(
                f"the frame has none of model {name!r}'s feature columns "
                f"({', '.join(f.name for f in spec.features[:5])}, …)"
            )
        body, headers = encode_request(tensors, wanted)
        path = f"/v2/models/{name}/infer"
        if version is not None:
            path = f"/v2/models/{name}/versions/{version}/infer"
        response = self._checked(self._http.post(path, content=body, headers=headers))
        results = decode_response(response.content, response.headers.get(HEADER_LENGTH))
        return _result_frame(results, wanted, spec.classes, frame.index)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def _spec(self, name: str, version: str | int | None) -> ModelSpec:
        key = (name, None if version is None else str(version))
        spec = self._specs.get(key)
        if spec is None:
            spec = ModelSpec.from_metadata(self.metadata(name, version=version))
            self._specs[key] = spec
        return spec

    def _get(self, path: str) -> Any:
        return self._checked(self._http.get(path)).json()

    def _checked(self, response: httpx.Response) -> httpx.Response:
        """The response, or the error it carries raised."""
        if response.status_code < 400:
            return response
        raise error_of(response)


def error_of(response: httpx.Response) -> MlserveError:
    """The error a failed response stands for, with the server's message."""
    try:
        message = str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        message = response.text.strip() or response.reason_phrase
    status = response.status_code
    if status == 503:
        try:
            retry_after_s = float(response.headers.get("retry-after", "1"))
        except ValueError:
            retry_after_s = 1.0
        return Overloaded(message, retry_after_s=retry_after_s)
    error = ERRORS.get(status)
    if error is None:
        return MlserveError(f"the server answered {status}: {message}")
    return error(message)


def _tensor(feature: FeatureSpec, series: pd.Series) -> InputTensor:
    """A column as the tensor of its feature: FP64 when the model asks for it and the column
    holds numbers; else BYTES, whose text the server reads by the grammar of every door (a
    number spelled as text, a category, or a value it refuses with its reason)."""
    if feature.datatype == "FP64" and is_numeric(series):
        return InputTensor(feature.name, "FP64", as_float64(series))
    return InputTensor(feature.name, "BYTES", as_texts(series))


def _result_frame(
    results: dict[str, np.ndarray],
    outputs: Sequence[str],
    classes: Sequence[Any],
    index: pd.Index,
) -> pd.DataFrame:
    """The outputs as columns: ``prediction``, ``proba_<class>`` per class, any other output
    under its own name (``name_<i>`` per column of a 2-D one)."""
    columns: dict[str, np.ndarray] = {}
    for name in outputs:
        values = results.get(name)
        if values is None:
            raise MlserveError(f"the server's answer has no output {name!r}")
        if values.ndim == 1:
            columns[PREDICTION_COLUMN if name == PREDICT else name] = values
            continue
        labels = classes if name == PREDICT_PROBA and len(classes) == values.shape[1] else None
        prefix = PROBA_PREFIX if name == PREDICT_PROBA else f"{name}_"
        for i in range(values.shape[1]):
            columns[f"{prefix}{labels[i] if labels is not None else i}"] = values[:, i]
    return pd.DataFrame(columns, index=index)
