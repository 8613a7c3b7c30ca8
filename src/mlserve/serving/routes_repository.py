"""The model repository extension of the Open Inference Protocol (Triton's and KServe's): list,
load and unload model versions while the server runs.

These change what is served, so the middleware lets only the admin key through
(``MLSERVE_ADMIN_API_KEY``); without one they are open on a loopback-only server and off
elsewhere. Loading or unloading never changes the server's readiness.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from mlserve.errors import InvalidInput
from mlserve.serving import repository
from mlserve.serving.body import read_body
from mlserve.serving.protocol import parse_json
from mlserve.serving.routes_v2 import json_response
from mlserve.serving.state import server_state

router = APIRouter(tags=["Model repository (admin)"])


@router.post("/v2/repository/index", summary="List model versions")
async def index(request: Request) -> Response:
    """Every version this server serves, loads, failed to load or unloaded, with its state
    (READY, LOADING, UNAVAILABLE) and why it is not ready; `{"ready": true}` keeps only the
    ready ones."""
    state = server_state(request)
    body = await read_body(request, state.max_request_bytes)
    ready_only = bool(_object(body).get("ready", False))
    return _rows(repository.index(state.models, ready_only=ready_only))


@router.post("/v2/repository/models/{model_name}/load", summary="Load a model")
async def load(request: Request, model_name: str) -> Response:
    """Serve a registered model: what its references point at now (followed from then on), or
    one version with `{"parameters": {"version": "3"}}`, beside the others. A version that
    fails to load is answered 400 with the reason; what was served goes on serving."""
    state = server_state(request)
    version = _version(await read_body(request, state.max_request_bytes))
    return _rows(await repository.load(state.models, model_name, version))


@router.post("/v2/repository/models/{model_name}/unload", summary="Unload a model")
async def unload(request: Request, model_name: str) -> Response:
    """Stop serving a model (or one version, `{"parameters": {"version": "3"}}`): requests it
    already took are answered, then its memory goes. An unloaded model is no longer followed
    until it is loaded again."""
    state = server_state(request)
    version = _version(await read_body(request, state.max_request_bytes))
    return _rows(await repository.unload(state.models, model_name, version))


def _rows(rows: list[repository.IndexRow]) -> Response:
    return json_response([dataclasses.asdict(row) for row in rows])


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object")
    return payload


def _version(body: bytes) -> str | None:
    parameters = _object(body).get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be an object")
    return repository.checked_version(parameters.get("version"))
