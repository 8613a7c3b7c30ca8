"""Many concurrent requests, across models and protocols, each get their own correct answer."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import (
    CHURN,
    IRIS,
    PRICE,
    LiveServer,
    ServingProject,
    running_server,
    v2_matrix_request,
    v2_tensor,
    wait_for_every_worker,
)

CONCURRENT_REQUESTS = 200


def build_request(
    index: int, project: ServingProject, churn_rows: pd.DataFrame
) -> tuple[str, dict[str, Any], str, np.ndarray]:
    """Request ``index``: (path, JSON body, model, expected predictions); each has its own rows."""
    rng = np.random.default_rng(index)
    rows = int(rng.integers(1, 30))
    kind = index % 4
    if kind == 0:
        values = rng.uniform(0.1, 8.0, size=(rows, 4)).round(3)
        body = v2_matrix_request(values, id=str(index))
        return f"/v2/models/{IRIS}/infer", body, IRIS, project.predict(IRIS, values)
    if kind == 1:
        values = rng.normal(size=(rows, 2))
        return (
            f"/v1/models/{PRICE}:predict",
            {"instances": values.tolist()},
            PRICE,
            project.predict(PRICE, values),
        )
    frame = churn_rows.sample(n=rows, replace=True, random_state=index).reset_index(drop=True)
    frame["plan"] = frame["plan"].fillna("basic")
    frame["monthly"] = rng.uniform(5, 100, size=rows).round(2)
    expected = project.predict(CHURN, frame)
    if kind == 2:
        inputs = [
            v2_tensor("plan", frame["plan"].to_numpy(dtype=str), "BYTES"),
            v2_tensor("region", frame["region"].to_numpy(dtype=str), "BYTES"),
            v2_tensor("monthly", frame["monthly"].to_numpy(), "FP64"),
            v2_tensor("tenure", frame["tenure"].to_numpy(), "INT64"),
        ]
        return f"/v2/models/{CHURN}/infer", {"inputs": inputs, "id": str(index)}, CHURN, expected
    records = frame.astype(object).to_dict(orient="records")
    return f"/invocations?model={CHURN}", {"dataframe_records": records}, CHURN, expected


def predictions_of(path: str, body: dict[str, Any]) -> list[Any]:
    """The predictions in a response body of any of the three APIs."""
    if path.startswith("/v2"):
        return list(body["outputs"][0]["data"])
    return list(body["predictions"])


async def fire(
    url: str, requests: list[tuple[str, dict[str, Any], str, np.ndarray]]
) -> list[httpx.Response]:
    """Send every request at once, each on its own connection."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(client.post(path, json=body) for path, body, _, _ in requests)
        )


def check_answers(
    requests: list[tuple[str, dict[str, Any], str, np.ndarray]], responses: list[httpx.Response]
) -> None:
    """Every response is a 200 holding exactly its own request's predictions."""
    for index, ((path, body, model, expected), response) in enumerate(
        zip(requests, responses, strict=True)
    ):
        assert response.status_code == 200, (index, response.text)
        answer = response.json()
        if path.startswith("/v2"):
            assert answer["id"] == body["id"]
            assert answer["model_name"] == model
        predicted = predictions_of(path, answer)
        if model == PRICE:
            np.testing.assert_allclose(predicted, expected, rtol=1e-9)
        else:
            assert predicted == expected.tolist(), index


def test_two_hundred_concurrent_requests_get_their_own_answers(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    requests = [build_request(i, serving_project, churn_rows) for i in range(CONCURRENT_REQUESTS)]
    responses = asyncio.run(fire(live_server.url, requests))
    check_answers(requests, responses)


def test_several_worker_processes_share_one_port(
    serving_project: ServingProject, churn_rows: pd.DataFrame, tmp_path: Path
) -> None:
    with running_server(
        serving_project.root, IRIS, PRICE, CHURN, "--workers", "2", log_dir=tmp_path, wait="none"
    ) as server:
        wait_for_every_worker(server)
        requests = [build_request(i, serving_project, churn_rows) for i in range(40)]
        check_answers(requests, asyncio.run(fire(server.url, requests)))
        families = text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
        iris_ok = sum(
            s.value
            for family in families
            for s in family.samples
            if s.name == "mlserve_requests_total"
            and s.labels.get("model") == IRIS
            and s.labels.get("status") == "200"
        )
        assert iris_ok == sum(path.startswith(f"/v2/models/{IRIS}") for path, *_ in requests)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
