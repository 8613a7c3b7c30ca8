"""Read a request body within the size limit, whether or not it declared its length."""

from __future__ import annotations

from starlette.requests import Request

from mlserve.errors import PayloadTooLarge


async def read_body(request: Request, limit_bytes: int) -> bytes:
    """The whole body; raises PayloadTooLarge past ``limit_bytes`` (chunked bodies included)."""
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit_bytes:
            raise PayloadTooLarge(limit_bytes)
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
