"""The Python HTTP limit: a bare ASGI app under uvicorn that reads the body and answers a fixed one.

No parsing, no model: what uvicorn alone costs per request, for the serving benchmark.
Run: uvicorn raw_asgi_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

# The floor's answer to one row, sent as is whatever the request.
ANSWER = b'{"outputs":[{"name":"predict","shape":[1],"datatype":"INT64","data":[1]}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]  # bare ASGI on purpose
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:  # read the whole body as the floor does, then ignore it
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
