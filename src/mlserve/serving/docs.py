"""Pydantic models that only document the JSON APIs in /openapi.json.

Hot paths never validate through them: handlers read raw bytes and return Response objects,
which FastAPI passes through untouched.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TensorDoc(BaseModel):
    """An input tensor of the Open Inference Protocol."""

    name: str = Field(examples=["input-0"])
    shape: list[int] = Field(examples=[[1, 4]])
    datatype: str = Field(
        examples=["FP64"], description="BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64 or BYTES"
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size for binary tensors"
    )
    data: list[Any] | None = Field(default=None, examples=[[5.1, 3.5, 1.4, 0.2]])


class RequestedOutputDoc(BaseModel):
    """An output the client wants, optionally as binary data."""

    name: str = Field(examples=["predict_proba"])
    parameters: dict[str, Any] | None = Field(default=None, examples=[{"binary_data": True}])


class InferRequestDoc(BaseModel):
    """An Open Inference Protocol v2 inference request."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, examples=[{"binary_data_output": False}]
    )
    inputs: list[TensorDoc]
    outputs: list[RequestedOutputDoc] | None = None


class OutputTensorDoc(BaseModel):
    """An output tensor."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponseDoc(BaseModel):
    """An Open Inference Protocol v2 inference response."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[OutputTensorDoc]


class ModelMetadataDoc(BaseModel):
    """Model metadata: inputs, outputs, versions, and state in parameters."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameters: dict[str, Any]


class PredictRequestDoc(BaseModel):
    """The simple JSON API: rows as lists (signature order) or as records (by feature name)."""

    instances: list[list[Any] | dict[str, Any]] = Field(
        examples=[[[5.1, 3.5, 1.4, 0.2]], [{"plan": "pro", "monthly": 42.0}]]
    )
    probabilities: bool = Field(default=False, description="Also return class probabilities")


class PredictResponseDoc(BaseModel):
    """Predictions, one per instance, and probabilities when asked for."""

    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    model_name: str
    model_version: str


class InvocationsRequestDoc(BaseModel):
    """MLflow scoring formats: exactly one of these keys (or a text/csv body)."""

    dataframe_split: dict[str, Any] | None = Field(
        default=None, examples=[{"columns": ["a", "b"], "data": [[1, 2]]}]
    )
    dataframe_records: list[dict[str, Any]] | None = None
    instances: list[Any] | None = None
    inputs: Any | None = None


class InvocationsResponseDoc(BaseModel):
    """MLflow's response: one prediction per row."""

    predictions: list[Any]


class FeedbackItemDoc(BaseModel):
    """The true label of one logged prediction."""

    request_id: str = Field(
        examples=["7f9c0d1e2a3b4c5d"], description="The X-Request-ID of the prediction response"
    )
    label: str | int | float | bool = Field(examples=["setosa"])
    row: int = Field(default=0, ge=0, description="Row of that request (0 for one-row requests)")


class FeedbackRequestDoc(BaseModel):
    """True labels: a list of items, or the compact parallel lists (rows optional)."""

    feedback: list[FeedbackItemDoc] | None = None
    request_ids: list[str] | None = Field(default=None, examples=[["7f9c0d1e2a3b4c5d"]])
    labels: list[str | int | float | bool] | None = Field(default=None, examples=[["setosa"]])
    rows: list[int] | None = None


class FeedbackResponseDoc(BaseModel):
    """How many labels joined a logged prediction, and the request ids that matched none."""

    joined: int
    unknown: list[str]


class OnlineScoresDoc(BaseModel):
    """Scores of one version's labelled predictions in the feedback window."""

    labelled_rows: int
    task: str = Field(examples=["classification"])
    accuracy: float | None = None
    f1: float | None = Field(default=None, description="Macro-averaged F1")
    mae: float | None = Field(default=None, description="Mean absolute error (regressors)")


class MonitoringResponseDoc(BaseModel):
    """Online scores per version and the prediction log's state."""

    model: str
    window_s: float | None = Field(description="The feedback window (null: prediction log off)")
    versions: dict[str, OnlineScoresDoc]
    prediction_log: dict[str, Any] = Field(
        examples=[{"enabled": True, "logged_rows": 1200, "queued_rows": 0}]
    )


DOC_MODELS: list[type[BaseModel]] = [
    InferRequestDoc,
    PredictRequestDoc,
    InvocationsRequestDoc,
    FeedbackRequestDoc,
]
"""Request models documented through openapi_extra; their schemas join the components."""
