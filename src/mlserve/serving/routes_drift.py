"""GET /v1/models/{m}/drift: compare the recent window with the version's reference, now."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlserve.errors import NotFound
from mlserve.monitoring.durations import parse_duration
from mlserve.serving.routes_v2 import json_response
from mlserve.serving.state import server_state

router = APIRouter(tags=["Monitoring"])


@router.get("/v1/models/{model_name}/drift", summary="Check drift now")
async def drift(request: Request, model_name: str) -> Response:
    """Test the logged inputs and predictions of the last `window` (e.g. `30m`, `1h`, `2d`;
    default: the server's drift_window_s) against the version's reference profile, update the
    drift gauges and return the report: per feature the test, statistic, p-value (raw and
    Holm-corrected) and whether it drifted. `version` picks a served version (default: newest).
    """
    state = server_state(request)
    window = request.query_params.get("window")
    window_s = parse_duration(window) if window is not None else None
    version = request.query_params.get("version")
    state.models.lookup(model_name, version)  # unknown model or version: 404 before anything
    if state.drift is None:
        raise NotFound("the prediction log is off (prediction_log: false): no inputs to compare")
    report = await state.drift.check(model_name, version, window_s)
    return json_response(report.to_dict())
