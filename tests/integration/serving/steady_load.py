"""Steady client load for live-update tests: threads of real httpx clients cycling over every
inference protocol (OIP JSON, OIP binary tensors, /v1 predict, /invocations as JSON and CSV),
each request one row of a fixed set, each answer recorded with the version that gave it.

Plain classes and functions, not fixtures: a test starts the load, changes the server under
it, stops it, then judges every recorded answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from serving_harness import HTTP_TIMEOUT_S, binary_request, decode_binary_response

LOAD_LIMIT_S = 240.0
"""A load never outlives this, whatever happens to the test that started it."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One inference response: which protocol, which row, what came back and from which version."""

    kind: str
    row: int
    status: int
    version: str | None
    prediction: str | None
    detail: str = ""
    """The start of the body (or the transport error) when the status is not 2xx."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """How one protocol sends a row and where its prediction is in the response."""

    name: str
    send: Callable[[httpx.Client, str, list[float], Sequence[str]], httpx.Response]
    read: Callable[[httpx.Response], Any]


def oip_body(row: list[float]) -> dict[str, Any]:
    """An OIP JSON request for one row: a [1, features] FP64 tensor."""
    return {"id": "steady", "inputs": [_tensor(row)]}


def _oip_json(client: httpx.Client, model: str, row: list[float], _: Sequence[str]) -> Any:
    return client.post(f"/v2/models/{model}/infer", json=oip_body(row))


def _oip_binary(client: httpx.Client, model: str, row: list[float], _: Sequence[str]) -> Any:
    content, headers = binary_request(
        [("input-0", np.asarray([row], dtype="<f8"), "FP64")],
        outputs=[{"name": "predict", "parameters": {"binary_data": True}}],
    )
    return client.post(f"/v2/models/{model}/infer", content=content, headers=headers)


def _v1(client: httpx.Client, model: str, row: list[float], _: Sequence[str]) -> Any:
    return client.post(f"/v1/models/{model}:predict", json={"instances": [row]})


def _split(client: httpx.Client, _model: str, row: list[float], names: Sequence[str]) -> Any:
    body = {"dataframe_split": {"columns": list(names), "data": [row]}}
    return client.post("/invocations", json=body)


def _csv(client: httpx.Client, _model: str, row: list[float], names: Sequence[str]) -> Any:
    # repr() writes the shortest text that reads back as the same float64
    text = ",".join(names) + "\n" + ",".join(repr(v) for v in row) + "\n"
    return client.post("/invocations", content=text, headers={"content-type": "text/csv"})


def _tensor(row: list[float]) -> dict[str, Any]:
    return {"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}


def _oip_prediction(response: httpx.Response) -> Any:
    outputs = response.json()["outputs"]
    return next(o for o in outputs if o["name"] == "predict")["data"][0]


PROTOCOLS = (
    Protocol("oip-json", _oip_json, _oip_prediction),
    Protocol("oip-binary", _oip_binary, lambda r: decode_binary_response(r)["predict"][0]),
    Protocol("v1", _v1, lambda r: r.json()["predictions"][0]),
    Protocol("invocations-json", _split, lambda r: r.json()["predictions"][0]),
    Protocol("invocations-csv", _csv, lambda r: r.json()["predictions"][0]),
)


def ask(
    client: httpx.Client,
    protocol: Protocol,
    model: str,
    rows: Sequence[list[float]],
    index: int,
    names: Sequence[str],
) -> Answer:
    """Send row ``index`` by ``protocol`` and record the answer; a transport error is status 0."""
    try:
        response = protocol.send(client, model, rows[index], names)
    except httpx.TransportError as exc:
        return Answer(protocol.name, index, 0, None, None, repr(exc))
    version = response.headers.get("x-model-version")
    if not response.is_success:
        return Answer(
            protocol.name, index, response.status_code, version, None, response.text[:300]
        )
    return Answer(protocol.name, index, response.status_code, version, str(protocol.read(response)))


@dataclass
class SteadyLoad:
    """``threads`` clients, each sending requests back to back until stopped, and polling
    readiness once per round of protocols. Use as a context manager; read the results after."""

    url: str
    model: str
    rows: list[list[float]]
    names: list[str]
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    readiness: list[int] = field(default_factory=list)
    """Status of every /v2/health/ready poll (0 for a transport error)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> SteadyLoad:
        deadline = time.monotonic() + LOAD_LIMIT_S
        for number in range(self.threads):
            worker = threading.Thread(
                target=self._run, args=(number, deadline), name=f"load-{number}", daemon=True
            )
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask every client to finish its request and wait for them."""
        self._stop.set()
        for worker in self._workers:
            worker.join(HTTP_TIMEOUT_S + 5)
        assert not any(w.is_alive() for w in self._workers), "a load thread did not stop"

    def count(self) -> int:
        """Answers recorded so far."""
        with self._lock:
            return len(self.answers)

    def _run(self, number: int, deadline: float) -> None:
        step = 0
        with httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT_S) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                protocol = PROTOCOLS[(step + number) % len(PROTOCOLS)]
                index = (step * self.threads + number) % len(self.rows)
                answer = ask(client, protocol, self.model, self.rows, index, self.names)
                with self._lock:
                    self.answers.append(answer)
                step += 1
                if step % len(PROTOCOLS) == 0:
                    self._poll_ready(client)

    def _poll_ready(self, client: httpx.Client) -> None:
        try:
            status = client.get("/v2/health/ready").status_code
        except httpx.TransportError:
            status = 0
        with self._lock:
            self.readiness.append(status)
