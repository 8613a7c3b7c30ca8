"""Health, per-model readiness, failed models, Prometheus metrics, request ids, JSON logs, docs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import (
    CHURN,
    IRIS,
    MLSERVE,
    PRICE,
    LiveServer,
    ServingProject,
    running_server,
    v2_matrix_request,
)

ROW = [5.1, 3.5, 1.4, 0.2]


def scrape(server: LiveServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics keyed by (name, labels)."""
    response = httpx.get(f"{server.url}/metrics", headers=server.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_count_requests_errors_latency_and_predictions(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    version = serving_project.versions[IRIS]
    before = scrape(live_server)
    rows = [ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    for _ in range(3):
        ok = httpx.post(f"{live_server.url}/v2/models/{IRIS}/infer", json=v2_matrix_request(rows))
        assert ok.status_code == 200
    bad = httpx.post(f"{live_server.url}/v2/models/{IRIS}/infer", json={"inputs": []})
    assert bad.status_code == 400
    v1 = httpx.post(f"{live_server.url}/v1/models/{PRICE}:predict", json={"instances": [[1, 2]]})
    assert v1.status_code == 200
    after = scrape(live_server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    iris_v2 = {"model": IRIS, "version": version, "protocol": "v2"}
    assert delta("mlserve_requests_total", **iris_v2, status="200") == 3
    assert delta("mlserve_requests_total", **iris_v2, status="400") == 1
    assert delta("mlserve_request_errors_total", **iris_v2, status="400") == 1
    assert delta("mlserve_request_errors_total", **iris_v2, status="200") == 0
    assert delta("mlserve_request_duration_seconds_count", **iris_v2) == 4
    assert delta("mlserve_request_duration_seconds_bucket", **iris_v2, le="+Inf") == 4
    buckets = {
        float(dict(labels)["le"])
        for name, labels in after
        if name == "mlserve_request_duration_seconds_bucket" and dict(labels)["model"] == IRIS
    }
    assert min(buckets) == 0.0005
    assert max(b for b in buckets if b != float("inf")) == 10.0
    price_v1 = {"model": PRICE, "version": serving_project.versions[PRICE], "protocol": "v1"}
    assert delta("mlserve_requests_total", **price_v1, status="200") == 1

    labels, counts = np.unique(serving_project.predict(IRIS, rows), return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
        assert (
            delta("mlserve_predictions_total", model=IRIS, version=version, **{"class": label})
            == 3 * count
        )
    assert (
        delta(
            "mlserve_predictions_total", model=PRICE, version=price_v1["version"], **{"class": ""}
        )
        == 1
    )


def test_metrics_gauges_for_loading_and_in_flight(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    samples = scrape(live_server)
    for name, version in serving_project.versions.items():
        assert sample(samples, "mlserve_model_load_seconds", model=name, version=version) > 0
        assert sample(samples, "mlserve_model_ready", model=name, version=version) == 1
    in_flight = {
        dict(labels)["protocol"]: value
        for (name, labels), value in samples.items()
        if name == "mlserve_requests_in_flight"
    }
    assert in_flight.get("v2") == 0  # nothing else is running
    assert in_flight.get("other") == 1  # this very scrape


def test_unknown_model_names_stay_out_of_metric_labels(live_server: LiveServer) -> None:
    name = f"typo-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{live_server.url}/v2/models/{name}/infer", json=v2_matrix_request([ROW])
    )
    assert response.status_code == 404
    assert name not in httpx.get(f"{live_server.url}/metrics").text


# -- request ids and version headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"/v2/models/{IRIS}/infer", v2_matrix_request([ROW])),
        ("POST", f"/v2/models/{IRIS}/infer", {"inputs": []}),
        ("POST", "/v2/models/nosuch/infer", v2_matrix_request([ROW])),
        ("GET", "/v2/health/ready", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
        ("GET", "/no/such/route", None),
    ],
)
def test_request_id_is_echoed_everywhere(
    live_server: LiveServer, method: str, path: str, body: object
) -> None:
    request_id = f"client-{uuid.uuid4()}"
    response = httpx.request(
        method, f"{live_server.url}{path}", json=body, headers={"x-request-id": request_id}
    )
    assert response.headers["x-request-id"] == request_id


def test_request_id_is_generated_when_absent(live_server: LiveServer) -> None:
    first = httpx.get(f"{live_server.url}/v2/health/live").headers["x-request-id"]
    second = httpx.get(f"{live_server.url}/v2/health/live").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_overlong_request_id_is_cut_to_128_characters(live_server: LiveServer) -> None:
    sent = "r" * 500
    echoed = httpx.get(f"{live_server.url}/v2/health/live", headers={"x-request-id": sent})
    assert echoed.headers["x-request-id"] == sent[:128]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/v2/models/{IRIS}/infer", v2_matrix_request([ROW])),
        (f"/v1/models/{IRIS}:predict", {"instances": [ROW]}),
        (f"/invocations?model={IRIS}", {"instances": [ROW]}),
    ],
)
def test_inference_responses_carry_the_model_version(
    live_server: LiveServer, serving_project: ServingProject, path: str, body: object
) -> None:
    response = httpx.post(f"{live_server.url}{path}", json=body)
    assert response.status_code == 200
    assert response.headers["x-model-version"] == serving_project.versions[IRIS]


def test_health_responses_carry_no_model_version(live_server: LiveServer) -> None:
    assert "x-model-version" not in httpx.get(f"{live_server.url}/v2/health/ready").headers


# -- logs -------------------------------------------------------------------------------------------


def test_access_log_is_one_json_object_per_line_with_context(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    request_id = f"log-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{live_server.url}/v2/models/{IRIS}/infer",
        json=v2_matrix_request([ROW]),
        headers={"x-request-id": request_id},
    )
    assert response.status_code == 200
    record = live_server.wait_for_log(lambda r: r.get("request_id") == request_id)
    assert record["level"] == "INFO"
    assert record["message"] == "request"
    assert record["model"] == IRIS
    assert record["version"] == serving_project.versions[IRIS]
    assert record["status"] == 200
    assert record["latency_ms"] > 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["timestamp"])
    lines = [line for line in live_server.stderr().splitlines() if line.strip()]
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"timestamp", "level", "message"} <= set(entry)


def test_logs_never_contain_the_input_payload(live_server: LiveServer) -> None:
    markers = {
        "number": "98765.4321",
        "category": "zebra-payload-7731",
        "bad-value": "secret-payload-4242",
        "malformed": "garbled-payload-5150",
        "csv": "csv-payload-6262",
    }
    requests: list[tuple[str, dict[str, Any]]] = [
        (f"/v2/models/{IRIS}/infer", {"json": v2_matrix_request([[98765.4321, 3.0, 1.0, 0.2]])}),
        (
            f"/v1/models/{CHURN}:predict",
            {
                "json": {
                    "instances": [
                        {"plan": "zebra-payload-7731", "region": "eu", "monthly": 1, "tenure": 2}
                    ]
                }
            },
        ),
        (
            f"/v1/models/{CHURN}:predict",
            {
                "json": {
                    "instances": [
                        {
                            "plan": "pro",
                            "region": "eu",
                            "monthly": "secret-payload-4242",
                            "tenure": 2,
                        }
                    ]
                }
            },
        ),
        (f"/v2/models/{IRIS}/infer", {"content": b'{"inputs": "garbled-payload-5150'}),
        (
            f"/invocations?model={CHURN}",
            {
                "content": b"plan,region,monthly,tenure\ncsv-payload-6262,eu,1,2\n",
                "headers": {"content-type": "text/csv"},
            },
        ),
    ]
    ids = []
    for path, kwargs in requests:
        request_id = f"payload-{uuid.uuid4().hex}"
        headers = {"x-request-id": request_id, **kwargs.pop("headers", {})}
        response = httpx.post(f"{live_server.url}{path}", headers=headers, **kwargs)
        assert response.status_code in (200, 400)
        ids.append(request_id)
    for request_id in ids:
        live_server.wait_for_log(lambda r, rid=request_id: r.get("request_id") == rid)
    stderr = live_server.stderr()
    for marker in markers.values():
        assert marker not in stderr


# -- a model that cannot load -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_model_server(
    tampered_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server for ``good`` and ``tampered`` (its artifact changed after registration)."""
    with running_server(
        tampered_project, log_dir=tmp_path_factory.mktemp("failed-logs"), wait="loaded"
    ) as server:
        yield server


def test_a_model_that_cannot_load_leaves_the_others_serving(
    failed_model_server: LiveServer,
) -> None:
    url = failed_model_server.url
    good = httpx.post(f"{url}/v2/models/good/infer", json=v2_matrix_request([ROW]))
    assert good.status_code == 200
    assert good.json()["outputs"][0]["data"] == ["setosa"]
    assert httpx.get(f"{url}/v2/models/good/ready").status_code == 200
    assert httpx.get(f"{url}/v2/health/live").status_code == 200


def test_server_is_not_ready_while_a_model_failed(failed_model_server: LiveServer) -> None:
    ready = httpx.get(f"{failed_model_server.url}/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert "tampered:1 failed" in ready.json()["error"]
    assert httpx.get(f"{failed_model_server.url}/ping").status_code == 503


def test_failed_model_reports_why_in_metadata(failed_model_server: LiveServer) -> None:
    url = failed_model_server.url
    meta = httpx.get(f"{url}/v2/models/tampered")
    assert meta.status_code == 200
    parameters = meta.json()["parameters"]
    assert parameters["state"] == "failed"
    assert "failed its integrity check" in parameters["reason"]
    listed = {m["name"]: m for m in httpx.get(f"{url}/v1/models").json()["models"]}
    assert listed["tampered"]["ready"] is False
    assert "failed its integrity check" in listed["tampered"]["reason"]
    assert listed["good"]["ready"] is True
    ready = httpx.get(f"{url}/v2/models/tampered/ready")
    assert ready.status_code == 503
    assert "failed its integrity check" in ready.json()["error"]


def test_infer_on_a_failed_model_is_503(failed_model_server: LiveServer) -> None:
    response = httpx.post(
        f"{failed_model_server.url}/v2/models/tampered/infer", json=v2_matrix_request([ROW])
    )
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert set(response.json()) == {"error"}
    assert "'tampered' is failed" in response.json()["error"]


def test_failed_model_is_logged_and_measured(failed_model_server: LiveServer) -> None:
    record = failed_model_server.wait_for_log(
        lambda r: r.get("message") == "model failed to load" and r.get("model") == "tampered"
    )
    assert record["level"] == "ERROR"
    assert "failed its integrity check" in record["reason"]
    samples = scrape(failed_model_server)
    assert sample(samples, "mlserve_model_ready", model="tampered", version="1") == 0
    assert sample(samples, "mlserve_model_ready", model="good", version="1") == 1


# -- OpenAPI and docs -------------------------------------------------------------------------------


def test_openapi_describes_the_json_apis(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in (
        "/v2/models/{model_name}/infer",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "/v2/health/ready",
        "/v1/models/{model_name}:predict",
        "/invocations",
    ):
        assert path in paths, path
    components = schema["components"]["schemas"]
    for model in ("InferRequestDoc", "PredictRequestDoc", "InvocationsRequestDoc", "TensorDoc"):
        assert model in components, model
    infer_body = paths["/v2/models/{model_name}/infer"]["post"]["requestBody"]
    ref = infer_body["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/InferRequestDoc"
    refs = re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', json.dumps(schema))
    assert set(refs) <= set(components)  # every reference resolves


def test_docs_render(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger" in response.text.lower()


def test_status_command_reports_the_failed_model_and_why(
    failed_model_server: LiveServer, tampered_project: Path
) -> None:
    """`mlserve status` reads the live server: the failed model is not ready, with the reason."""
    result = subprocess.run(
        [MLSERVE, "status", "--server", failed_model_server.url],
        cwd=tampered_project,
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "not ready" in lines["tampered"]
    assert "integrity" in lines["tampered"]
    assert "ready" in lines["good"]
    assert "not ready" not in lines["good"]
    assert f"{failed_model_server.url} not ready" in result.stdout
