"""Ground truth in, online scores out: /v1/models/{m}/feedback and /v1/models/{m}/monitoring."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlserve.errors import NotFound
from mlserve.monitoring.feedback import OnlineMetrics
from mlserve.serving.body import read_body
from mlserve.serving.docs import FeedbackResponseDoc, MonitoringResponseDoc
from mlserve.serving.feedback import check_labels, parse_feedback, task_of
from mlserve.serving.routes_v2 import json_response
from mlserve.serving.state import server_state

router = APIRouter(tags=["Monitoring"])

FEEDBACK_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequestDoc"}}
        },
    }
}


@router.post(
    "/v1/models/{model_name}/feedback",
    response_model=FeedbackResponseDoc,
    openapi_extra=FEEDBACK_DOC,
    summary="Send true labels",
)
async def feedback(request: Request, model_name: str) -> Response:
    """Join true labels to logged predictions by request id (the `X-Request-ID` each prediction
    response carries) and row; ids that match no logged prediction come back in `unknown`.
    Online accuracy and F1 (classifiers) or MAE (regressors) are recomputed at once."""
    state = server_state(request)
    versions = [m for m in state.models.served() if m.name == model_name]
    if not versions:
        state.models.lookup(model_name)  # raises ModelNotFound
    if state.online is None:
        raise NotFound("the prediction log is off (prediction_log: false): no predictions to label")
    items = parse_feedback(await read_body(request, state.max_request_bytes))
    check_labels(versions, items)
    result = await state.online.add_feedback(model_name, items)
    return json_response({"joined": result.joined, "unknown": result.unknown})


@router.get(
    "/v1/models/{model_name}/monitoring",
    response_model=MonitoringResponseDoc,
    summary="Online scores",
)
async def monitoring(request: Request, model_name: str) -> Response:
    """Per served (or labelled) version: labelled rows in the feedback window and their accuracy
    and macro F1 (classifiers) or MAE (regressors); and the prediction log's state."""
    state = server_state(request)
    served = [m for m in state.models.served() if m.name == model_name]
    if not served:
        state.models.lookup(model_name)  # raises ModelNotFound
    log_state: dict[str, Any] = {"enabled": state.online is not None}
    if state.online is None:
        scores = {m.version: OnlineMetrics(labelled_rows=0, task=task_of(m)) for m in served}
        window_s = None
    else:
        scores = await state.online.refresh(model_name)
        window_s = state.online.window_s
        log_state["logged_rows"] = await asyncio.to_thread(state.online.logged_rows, model_name)
        if state.prediction_log is not None:
            log_state["queued_rows"] = state.prediction_log.queued_rows
    return json_response(
        {
            "model": model_name,
            "window_s": window_s,
            "versions": {version: s.to_dict() for version, s in scores.items()},
            "prediction_log": log_state,
        }
    )
