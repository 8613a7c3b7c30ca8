"""The floor: the least a server can do. uvicorn + orjson + model.predict, nothing else.

Takes the same Open Inference Protocol body as the others so every server parses equal work.
Run: MODEL_PATH=model.joblib uvicorn floor_app:app
"""

from __future__ import annotations

import os

import joblib
import numpy as np
import orjson

model = joblib.load(os.environ["MODEL_PATH"])


async def app(scope, receive, send):  # type: ignore[no-untyped-def]  # bare ASGI on purpose
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request = orjson.loads(body)
    tensor = request["inputs"][0]
    rows = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
    predicted = model.predict(rows)
    response = orjson.dumps(
        {
            "outputs": [
                {
                    "name": "predict",
                    "shape": [len(predicted)],
                    "datatype": "INT64",
                    "data": predicted.tolist(),
                }
            ]
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": response})
