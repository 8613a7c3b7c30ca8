"""The simple JSON API (/v1) and the MLflow/SageMaker scoring API (/invocations, /ping)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from mlserve import __version__
from mlserve.errors import InvalidInput
from mlserve.inputs import CheckedRows, read_csv_text
from mlserve.serving.body import read_body
from mlserve.serving.cache import Answer, respond
from mlserve.serving.docs import (
    InvocationsResponseDoc,
    PredictRequestDoc,
    PredictResponseDoc,
)
from mlserve.serving.inference import PREDICT, PREDICT_PROBA
from mlserve.serving.models import VersionStatus
from mlserve.serving.protocol import may_hold_booleans, parse_json
from mlserve.serving.routes_v2 import json_response
from mlserve.serving.served import ServedVersion
from mlserve.serving.state import answer_with, server_state, serving_model, version_of
from mlserve.serving.tabular import read_parquet

router = APIRouter()

PARQUET = "application/vnd.apache.parquet"
"""MLflow's content type for a Parquet body."""


def _body_doc(model: type[Any]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


@router.get("/v1/models", tags=["Simple JSON API"], summary="List served models")
async def list_models(request: Request) -> Response:
    """Every served model version with its state (and why it is not ready)."""
    manager = server_state(request).models
    models = [
        {**_describe(s), "default": manager.default_version(s.name) == s.version}
        for s in manager.statuses()
    ]
    return json_response({"models": models})


@router.get("/v1/models/{model_name}", tags=["Simple JSON API"], summary="Describe a model")
async def describe_model(request: Request, model_name: str) -> Response:
    """State, version and signature of a served model."""
    status, served = await version_of(request, model_name, None)
    described = _describe(status)
    if served is not None:
        described["signature"] = served.runtime.signature.to_dict()
    return json_response(described)


@router.post(
    "/v1/models/{model_name}:predict",
    tags=["Simple JSON API"],
    response_model=PredictResponseDoc,
    openapi_extra=_body_doc(PredictRequestDoc),
    summary="Predict",
)
async def predict(request: Request, model_name: str) -> Response:
    """Predict rows given as lists (signature order) or records (by feature name)."""
    return await run_predict(request, model_name, None)


@router.post(
    "/v1/models/{model_name}/versions/{model_version}:predict",
    tags=["Simple JSON API"],
    response_model=PredictResponseDoc,
    openapi_extra=_body_doc(PredictRequestDoc),
    summary="Predict with a version",
)
async def predict_version(request: Request, model_name: str, model_version: str) -> Response:
    """Predict with one served version."""
    return await run_predict(request, model_name, model_version)


async def run_predict(request: Request, model_name: str, version: str | None) -> Response:
    """Predict rows given as lists or records, with probabilities on request."""
    state = server_state(request)
    served = await serving_model(request, model_name, version)
    body = await read_body(request, state.max_request_bytes)
    return await answer_with(
        request,
        served,
        lambda chosen, route: respond(
            chosen.cache, body, ("v1",), lambda: _predict(chosen, body, route)
        ),
    )


async def _predict(served: ServedVersion, raw: bytes, route: str) -> Answer:
    payload = parse_json(raw)
    given = [k for k in ("instances", "inputs") if isinstance(payload, dict) and k in payload]
    if len(given) != 1:
        raise InvalidInput(
            'the body must be a JSON object with "instances": [...] or "inputs": [...] '
            "(KServe's v1 protocol), not both"
        )
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    want_proba = bool(payload.get("probabilities") or parameters.get("probabilities"))
    if want_proba and not served.runtime.has_proba:
        raise InvalidInput(f"model {served.name!r} does not give probabilities")
    checked = served.schema.from_rows(payload[given[0]], may_hold_booleans=may_hold_booleans(raw))
    outputs = [PREDICT, PREDICT_PROBA] if want_proba else [PREDICT]
    prediction = await served.predict(checked, outputs, route=route)
    results = prediction.outputs
    body: dict[str, Any] = {"predictions": _plain(results[PREDICT])}
    if want_proba:
        body["probabilities"] = results[PREDICT_PROBA]
        body["classes"] = served.runtime.classes
    body["model_name"] = served.name
    body["model_version"] = served.version
    return json_response(body), prediction.logged


@router.get("/", tags=["Simple JSON API"], summary="KServe-style liveness")
async def alive() -> Response:
    """200 while the process runs (the KServe v1 client's liveness call), as /v2/health/live."""
    return json_response({"status": "alive"})


@router.get("/ping", tags=["MLflow scoring API"], summary="SageMaker-style health")
async def ping(request: Request) -> Response:
    """200 when ready, 503 otherwise (SageMaker and `mlflow models serve` clients poll this)."""
    ready = server_state(request).is_ready
    return json_response({"status": "ready" if ready else "not ready"}, 200 if ready else 503)


@router.get(
    "/version",
    tags=["MLflow scoring API"],
    summary="Server version",
    response_class=PlainTextResponse,
)
async def server_version() -> Response:
    """The server's version as plain text, as `mlflow models serve` answers with MLflow's."""
    return PlainTextResponse(__version__)


@router.get("/health", tags=["MLflow scoring API"], summary="MLflow-style health")
async def health(request: Request) -> Response:
    """Same as /ping."""
    return await ping(request)


@router.post(
    "/invocations",
    tags=["MLflow scoring API"],
    response_model=InvocationsResponseDoc,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InvocationsRequestDoc"}
                },
                "text/csv": {"schema": {"type": "string"}},
                PARQUET: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    summary="MLflow scoring",
)
async def invocations(request: Request) -> Response:
    """Score `dataframe_split`, `dataframe_records`, `instances`, `inputs`, a CSV or a Parquet
    body (`application/vnd.apache.parquet`, what `DataFrame.to_parquet` writes).

    With several models served, name one with `?model=NAME` or an `X-Model-Name` header.
    """
    state = server_state(request)
    name = request.query_params.get("model") or request.headers.get("x-model-name")
    if name is None:
        names = sorted({s.name for s in state.models.statuses()})
        if len(names) != 1:
            raise InvalidInput(
                f"several models are served ({', '.join(names)}); name one with ?model=NAME"
            )
        name = names[0]
    served = await serving_model(request, name)
    body = await read_body(request, state.max_request_bytes)
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    return await answer_with(
        request,
        served,
        lambda chosen, route: respond(
            chosen.cache,
            body,
            ("mlflow", content_type),
            lambda: _invocations(chosen, body, content_type, route),
        ),
    )


async def _invocations(served: ServedVersion, body: bytes, content_type: str, route: str) -> Answer:
    if content_type == "text/csv":
        checked = served.schema.from_table(read_csv_text(body))
    elif content_type in ("application/json", ""):
        checked = _mlflow_rows(served, parse_json(body), may_hold_booleans(body))
    elif content_type == PARQUET:
        checked = served.schema.from_table(read_parquet(body))
    else:
        raise InvalidInput(
            f"unsupported content type {content_type!r}; "
            f"use application/json, text/csv or {PARQUET}"
        )
    prediction = await served.predict(checked, [PREDICT], route=route)
    return json_response({"predictions": _plain(prediction.outputs[PREDICT])}), prediction.logged


def _mlflow_rows(model: ServedVersion, payload: Any, booleans: bool) -> CheckedRows:
    """Rows from one of MLflow's four JSON input formats."""
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object")
    keys = [  # a null value is a key left out (JSON writers send absent fields as null)
        k
        for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
        if payload.get(k) is not None
    ]
    if len(keys) != 1:
        raise InvalidInput(
            "the body must have exactly one of: dataframe_split, dataframe_records, instances, inputs"
        )
    value = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise InvalidInput('dataframe_split needs "columns" and "data"')
        return model.schema.from_split(value.get("columns"), value["data"])
    if keys[0] == "dataframe_records":
        if not isinstance(value, list):
            raise InvalidInput("dataframe_records must be a list of records")
        return model.schema.from_rows(value, may_hold_booleans=booleans)
    if isinstance(value, dict):  # {"feature": [values...]} columns
        return model.schema.from_columns(value)
    return model.schema.from_rows(value, may_hold_booleans=booleans)


def _plain(values: np.ndarray) -> Any:
    """Predictions as JSON values (numpy arrays of numbers pass through orjson as they are)."""
    if values.dtype.kind in "OU":
        return [v if isinstance(v, (str, int, float, bool)) else str(v) for v in values.tolist()]
    return values


def _describe(status: VersionStatus) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": status.name,
        "version": status.version,
        "state": status.state,
        "ready": status.is_ready,
        "framework": status.framework,
    }
    if status.reason:
        described["reason"] = status.reason
    if status.load_s is not None:
        described["load_s"] = round(status.load_s, 3)
    return described
