"""gRPC status codes: an error's HTTP status (`serving.errors`, the one table of our errors)
turned into the gRPC code that means the same, so both protocols judge an error alike."""

from __future__ import annotations

import logging

import grpc

from mlserve.errors import NotReady, Overloaded

log = logging.getLogger(__name__)

GRPC_CODES: dict[int, grpc.StatusCode] = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""By HTTP status; anything else is INTERNAL."""
CLIENT_CLOSED = 499
"""The status a call is counted under when its client cancelled it (nginx's number)."""
RETRY_PUSHBACK = "grpc-retry-pushback-ms"
"""Trailer telling gRPC's retry policy when to try again (the gRPC form of Retry-After)."""


def code_for(status: int) -> grpc.StatusCode:
    """The gRPC code of an HTTP status."""
    return GRPC_CODES.get(status, grpc.StatusCode.INTERNAL)


def retry_pushback(error: BaseException) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a refusal worth retrying later (overloaded, not ready)."""
    if isinstance(error, Overloaded):
        return ((RETRY_PUSHBACK, str(round(error.retry_after_s * 1000))),)
    if isinstance(error, NotReady):
        return ((RETRY_PUSHBACK, "1000"),)
    return ()
