"""The only code that knows HTTP status codes: errors become JSON bodies here."""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response

from mlserve.errors import (
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    MlserveError,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    RegistryUnavailable,
    Unauthorized,
)

log = logging.getLogger(__name__)

STATUS_CODES: dict[type[Exception], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    RateLimited: 429,
    NotReady: 503,
    Overloaded: 503,
    RegistryUnavailable: 503,
    DeadlineExceeded: 504,
}
"""Searched along the error's MRO; anything else is a 500."""


def status_for(error: BaseException) -> int:
    """The HTTP status for an error."""
    for cls in type(error).__mro__:
        status = STATUS_CODES.get(cls)
        if status is not None:
            return status
    return 500


MLFLOW_PATH = "/invocations"
"""MLflow's scoring path: its clients read ``error_code`` and ``message`` from error bodies."""
MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""MLflow's error codes (its ErrorCode names) by status; any other status is INTERNAL_ERROR."""


def error_response(error: BaseException, path: str = "") -> Response:
    """Render any error as ``{"error": "..."}`` with its status (on MLflow's scoring path with
    MLflow's ``error_code`` and ``message`` beside it); 500s hide their details."""
    status = status_for(error)
    headers: dict[str, str] = {}
    if status == 500:
        log.error("unhandled error", exc_info=error)
        message = "internal server error"
    else:
        message = str(error)
    if isinstance(error, Overloaded):
        headers["retry-after"] = str(max(1, round(error.retry_after_s)))
    elif isinstance(error, NotReady | RegistryUnavailable):
        headers["retry-after"] = "1"
    if isinstance(error, Unauthorized):
        headers["www-authenticate"] = "Bearer"
    return json_error(status, message, headers, mlflow=path == MLFLOW_PATH)


def json_error(
    status: int, message: str, headers: dict[str, str] | None = None, *, mlflow: bool = False
) -> Response:
    """A JSON error body."""
    body: dict[str, str] = {"error": message}
    if mlflow:
        body["error_code"] = MLFLOW_CODES.get(status, "INTERNAL_ERROR")
        body["message"] = message
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def handle_mlserve_error(request: Request, error: Exception) -> Response:
    """FastAPI exception handler for every error we raise on purpose."""
    return error_response(error, request.url.path)


async def handle_unexpected(_request: object, error: Exception) -> Response:
    """The HTTP edge: log with traceback, answer 500."""
    if isinstance(error, MlserveError):
        return error_response(error)
    log.exception("unhandled error in request", exc_info=error)
    return json_error(500, "internal server error")
