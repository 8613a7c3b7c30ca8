"""The API's documentation: Swagger UI at /docs, and pydantic models that only document the
JSON APIs in /openapi.json.

Hot paths never validate through them: handlers read raw bytes and return Response objects,
which FastAPI passes through untouched.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

DOCS_ASSETS = "/docs/assets"
"""Where Swagger UI's own files are served from (the swagger-ui-py package ships them)."""


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


class ErrorDoc(BaseModel):
    """Every error answer: what went wrong, in one line (MLflow's scoring path adds its
    ``error_code`` and ``message``)."""

    error: str = Field(examples=["model 'churn' is not served"])
    error_code: str | None = Field(default=None, examples=["BAD_REQUEST"])
    message: str | None = None


ERRORS: dict[str, str] = {
    "400": "The request is malformed, or a row cannot be scored (the error names it).",
    "401": "An API key is configured and the request carries none.",
    "403": "The API key is wrong, or cannot do this (the repository API takes the admin key).",
    "404": "No such model or version is served (the error says how to serve it).",
    "413": "The body is larger than max_request_bytes.",
    "503": "Not ready, shutting down, or overloaded (see Retry-After).",
    "504": "The request ran past request_timeout_s.",
}
"""What each error status means, for the OpenAPI document."""


def document_errors(schema: dict[str, Any]) -> None:
    """Describe in ``schema`` the errors each operation really answers, all with ErrorDoc bodies,
    in place of FastAPI's 422 (the server answers a malformed request 400, never 422)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorDoc"] = ErrorDoc.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDoc"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in _errors_of(path, method):
                responses[status] = {"description": ERRORS[status], "content": body}


def _errors_of(path: str, method: str) -> list[str]:
    """The error statuses of one operation."""
    statuses = ["401", "403"]  # any operation, once API keys are set
    if "{model_name}" in path or path == "/invocations":
        statuses.append("404")
    if method == "post" or path.endswith(("/drift", "/monitoring")):
        statuses.append("400")
    if method == "post":
        statuses += ["413", "503", "504"]
    elif path.endswith(("/ready", "/drift", "/monitoring")):
        statuses.append("503")
    return sorted(set(statuses))


def add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, served with its scripts and styles from this server: the page works
    with no internet access (FastAPI's default loads them from a CDN)."""
    app.mount(DOCS_ASSETS, SwaggerAssets(), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


class SwaggerAssets:
    """Swagger UI's own files, from the swagger-ui-py package, which is imported on the first
    request for one: it imports jinja2, PyYAML and its web-framework adapters, start-up time
    that serving does not need."""

    def __init__(self) -> None:
        self._files: StaticFiles | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._files is None:
            import swagger_ui

            self._files = StaticFiles(directory=str(files(swagger_ui) / "static"))
        await self._files(scope, receive, send)
