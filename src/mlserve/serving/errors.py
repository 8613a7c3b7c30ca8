"""The only code that knows HTTP status codes: errors become JSON bodies here."""

from __future__ import annotations

import logging

import orjson
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


def error_response(error: BaseException) -> Response:
    """Render any error as ``{"error": "..."}`` with its status; 500s hide their details."""
    status = status_for(error)
    headers: dict[str, str] = {}
    if status == 500:
        log.error("unhandled error", exc_info=error)
        message = "internal server error"
    else:
        message = str(error)
    if isinstance(error, Overloaded):
        headers["retry-after"] = str(max(1, round(error.retry_after_s)))
    elif isinstance(error, NotReady):
        headers["retry-after"] = "1"
    if isinstance(error, Unauthorized):
        headers["www-authenticate"] = "Bearer"
    return json_error(status, message, headers)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error body."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def handle_mlserve_error(_request: object, error: Exception) -> Response:
    """FastAPI exception handler for every error we raise on purpose."""
    return error_response(error)


async def handle_unexpected(_request: object, error: Exception) -> Response:
    """The HTTP edge: log with traceback, answer 500."""
    if isinstance(error, MlserveError):
        return error_response(error)
    log.exception("unhandled error in request", exc_info=error)
    return json_error(500, "internal server error")
