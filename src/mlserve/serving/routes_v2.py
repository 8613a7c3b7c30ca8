"""Open Inference Protocol v2 over REST: health, metadata and infer (JSON and binary)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from mlserve.errors import InvalidInput, NotReady
from mlserve.serving import oip
from mlserve.serving.body import read_body
from mlserve.serving.cache import Answer, respond
from mlserve.serving.docs import InferResponseDoc, ModelMetadataDoc
from mlserve.serving.protocol import HEADER_LENGTH, decode_request, encode_response
from mlserve.serving.served import ServedVersion
from mlserve.serving.state import answer_with, server_state, serving_model, version_of

router = APIRouter(tags=["Open Inference Protocol v2"])


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response rendered by orjson."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
    )


@router.get("/v2", summary="Server metadata")
async def server_metadata() -> Response:
    """Name, version and protocol extensions of this server."""
    return json_response(
        {"name": oip.SERVER_NAME, "version": oip.SERVER_VERSION, "extensions": oip.EXTENSIONS}
    )


@router.get("/v2/health/live", summary="Liveness")
async def live() -> Response:
    """200 while the process can answer at all."""
    return json_response({"live": True})


@router.get("/v2/health/ready", summary="Readiness")
async def ready(request: Request) -> Response:
    """200 when every configured model is loaded and warmed; 503 otherwise."""
    state = server_state(request)
    if state.is_ready:
        return json_response({"ready": True})
    reason = oip.not_ready_reason(state.draining, state.models)
    return json_response({"ready": False, "error": f"not ready: {reason}"}, 503)


@router.get("/v2/models/{model_name}", response_model=ModelMetadataDoc, summary="Model metadata")
async def model_metadata(request: Request, model_name: str) -> Response:
    """Inputs, outputs, versions and state of a model (failed models say why)."""
    return json_response(await _metadata(request, model_name, None))


@router.get(
    "/v2/models/{model_name}/versions/{model_version}",
    response_model=ModelMetadataDoc,
    summary="Model version metadata",
)
async def model_version_metadata(request: Request, model_name: str, model_version: str) -> Response:
    """Metadata of one served version."""
    return json_response(await _metadata(request, model_name, model_version))


@router.get("/v2/models/{model_name}/ready", summary="Model readiness")
async def model_ready(request: Request, model_name: str) -> Response:
    """200 when the model is loaded and warmed, 503 with the reason otherwise."""
    return await _ready(request, model_name, None)


@router.get("/v2/models/{model_name}/versions/{model_version}/ready", summary="Version readiness")
async def model_version_ready(request: Request, model_name: str, model_version: str) -> Response:
    """Readiness of one served version."""
    return await _ready(request, model_name, model_version)


INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequestDoc"}}
        },
    }
}


@router.post(
    "/v2/models/{model_name}/infer",
    response_model=InferResponseDoc,
    openapi_extra=INFER_DOC,
    summary="Infer",
)
async def infer(request: Request, model_name: str) -> Response:
    """Predict; JSON or binary tensors in and out."""
    return await run_infer(request, model_name, None)


@router.post(
    "/v2/models/{model_name}/versions/{model_version}/infer",
    response_model=InferResponseDoc,
    openapi_extra=INFER_DOC,
    summary="Infer with a version",
)
async def infer_version(request: Request, model_name: str, model_version: str) -> Response:
    """Predict with one served version."""
    return await run_infer(request, model_name, model_version)


async def run_infer(request: Request, model_name: str, version: str | None) -> Response:
    """Decode an OIP request, predict, encode the response (JSON or binary)."""
    state = server_state(request)
    served = await serving_model(request, model_name, version)
    body = await read_body(request, state.max_request_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    if header_length is not None and not header_length.isdigit():
        raise InvalidInput(f"{HEADER_LENGTH} must be a number of bytes")
    qualifiers = ("v2", header_length)
    return await answer_with(
        request,
        served,
        lambda chosen, route: respond(
            chosen.cache, body, qualifiers, lambda: _infer(chosen, body, header_length, route)
        ),
    )


async def _infer(
    served: ServedVersion, body: bytes, header_length: str | None, route: str
) -> Answer:
    decoded = decode_request(body, int(header_length) if header_length else None)
    inferred = await oip.infer(served, decoded, route)
    binary_default = decoded.binary_output
    flags = {o.name: o.binary for o in decoded.outputs}
    binary = [
        flags.get(name) if flags.get(name) is not None else binary_default
        for name, _ in inferred.outputs
    ]
    encoded = encode_response(
        served.name,
        served.version,
        inferred.outputs,
        [bool(b) for b in binary],
        request_id=decoded.id,
    )
    response = Response(encoded.body, media_type=encoded.media_type, headers=encoded.headers)
    return response, inferred.logged


async def _ready(request: Request, name: str, version: str | None) -> Response:
    status, _served = await version_of(request, name, version)
    if status.is_ready:
        return json_response({"name": status.name, "version": status.version, "ready": True})
    error = NotReady(oip.model_not_ready(status))
    body = {"name": status.name, "version": status.version, "ready": False, "error": str(error)}
    return json_response(body, 503)


async def _metadata(request: Request, name: str, version: str | None) -> dict[str, Any]:
    status, served = await version_of(request, name, version)
    return oip.model_metadata(server_state(request).models, status, served)
