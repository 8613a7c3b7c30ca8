"""API keys: MLSERVE_API_KEY guards inference; health and metrics stay open unless protected."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from serving_harness import (
    IRIS,
    MLSERVE,
    LiveServer,
    ServingProject,
    kill_group,
    launch,
    server_environment,
    shutdown,
    v2_matrix_request,
)
from tritonclient.utils import InferenceServerException

ALPHA, BETA = "alpha-key-1111", "beta-key-2222"
WRONG = "wrong-key-9999"
ROW = [5.1, 3.5, 1.4, 0.2]

INFERENCE_CALLS = [
    ("POST", f"/v2/models/{IRIS}/infer", v2_matrix_request([ROW])),
    ("POST", f"/v1/models/{IRIS}:predict", {"instances": [ROW]}),
    ("POST", f"/invocations?model={IRIS}", {"instances": [ROW]}),
    ("GET", f"/v2/models/{IRIS}", None),
    ("GET", "/v1/models", None),
]
HEALTH_PATHS = ["/v2/health/live", "/v2/health/ready", "/ping", "/health", "/metrics"]


@pytest.fixture(scope="module")
def auth_servers(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """Two keyed servers, started together: health open (``open``) and protected (``protected``)."""
    logs = tmp_path_factory.mktemp("auth-logs")
    keys = f"{ALPHA}, {BETA}"  # spaces around the comma are trimmed
    servers = {
        "open": launch(serving_project.root, IRIS, env={"MLSERVE_API_KEY": keys}, log_dir=logs),
        "protected": launch(
            serving_project.root,
            IRIS,
            env={"MLSERVE_API_KEY": keys, "MLSERVE_PROTECT_HEALTH": "true"},
            headers={"authorization": f"Bearer {ALPHA}"},
            log_dir=logs,
        ),
    }
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            shutdown(server)


@pytest.fixture
def keyed(auth_servers: dict[str, LiveServer]) -> LiveServer:
    """The keyed server whose health endpoints are open."""
    return auth_servers["open"]


def call(
    server: LiveServer, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    """One request to ``server``."""
    return httpx.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("method", "path", "body"), INFERENCE_CALLS)
def test_no_key_is_401(keyed: LiveServer, method: str, path: str, body: object) -> None:
    response = call(keyed, method, path, body, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-request-id"]
    mlflow = path.startswith("/invocations")  # MLflow's error_code and message there too
    assert set(response.json()) == ({"error", "error_code", "message"} if mlflow else {"error"})
    assert "API key is required" in response.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {WRONG}"},
        {"x-api-key": WRONG},
        {"authorization": f"Bearer {ALPHA}x"},
        {"authorization": f"Bearer {ALPHA[:-1]}"},
    ],
)
@pytest.mark.parametrize(("method", "path", "body"), INFERENCE_CALLS[:3])
def test_wrong_key_is_403(
    keyed: LiveServer, method: str, path: str, body: object, headers: dict[str, str]
) -> None:
    response = call(keyed, method, path, body, headers)
    assert response.status_code == 403
    assert response.json()["error"] == "the API key is not valid"
    mlflow = path.startswith("/invocations")  # MLflow's error_code and message there too
    assert set(response.json()) == ({"error", "error_code", "message"} if mlflow else {"error"})


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {ALPHA}"},
        {"authorization": f"bearer {BETA}"},
        {"x-api-key": BETA},
        {"x-api-key": ALPHA},
    ],
    ids=["bearer-first", "bearer-lowercase-second", "x-api-key-second", "x-api-key-first"],
)
@pytest.mark.parametrize(("method", "path", "body"), INFERENCE_CALLS)
def test_valid_key_is_served(
    keyed: LiveServer, method: str, path: str, body: object, headers: dict[str, str]
) -> None:
    response = call(keyed, method, path, body, headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "path", [*HEALTH_PATHS, "/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"]
)
def test_health_metrics_and_docs_stay_open(keyed: LiveServer, path: str) -> None:
    assert httpx.get(f"{keyed.url}{path}").status_code == 200


@pytest.mark.parametrize("path", HEALTH_PATHS)
def test_protected_health_needs_the_key(auth_servers: dict[str, LiveServer], path: str) -> None:
    server = auth_servers["protected"]
    assert httpx.get(f"{server.url}{path}").status_code == 401
    assert httpx.get(f"{server.url}{path}", headers={"x-api-key": WRONG}).status_code == 403
    assert httpx.get(f"{server.url}{path}", headers={"x-api-key": BETA}).status_code == 200


def test_protected_health_server_still_serves_docs(auth_servers: dict[str, LiveServer]) -> None:
    assert httpx.get(f"{auth_servers['protected'].url}/docs").status_code == 200


def test_triton_client_sends_the_key_as_a_header(keyed: LiveServer) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{keyed.port}", network_timeout=30)
    try:
        tensor = triton.InferInput("input-0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([ROW], dtype=np.float32))
        result = client.infer(IRIS, [tensor], headers={"Authorization": f"Bearer {ALPHA}"})
        assert [v.decode() for v in result.as_numpy("predict")] == ["setosa"]
        with pytest.raises(InferenceServerException) as refused:
            client.infer(IRIS, [tensor])
        assert refused.value.status() == "401"
    finally:
        client.close()


def test_kserve_client_sends_the_key_as_a_header(keyed: LiveServer) -> None:
    request = InferRequest(IRIS, [InferInput("input-0", [1, 4], "FP64", ROW)])

    async def infer(headers: dict[str, str]) -> Any:
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
            return await client.infer(keyed.url, request, model_name=IRIS, headers=headers)

    response = asyncio.run(infer({"x-api-key": BETA}))
    assert [str(v) for v in response.outputs[0].as_numpy().tolist()] == ["setosa"]
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        asyncio.run(infer({}))


def test_keys_never_appear_in_logs_or_error_messages(auth_servers: dict[str, LiveServer]) -> None:
    bodies = []
    for server in auth_servers.values():
        for headers in ({"x-api-key": WRONG}, {"authorization": f"Bearer {WRONG}"}, {}):
            response = call(server, "POST", f"/v2/models/{IRIS}/infer", {"inputs": []}, headers)
            bodies.append(response.text)
        bad = call(server, "POST", f"/v2/models/{IRIS}/infer", {"inputs": []}, {"x-api-key": ALPHA})
        assert bad.status_code == 400
        bodies.append(bad.text)
        request_id = bad.headers["x-request-id"]
        server.wait_for_log(lambda r, rid=request_id: r.get("request_id") == rid)
    for key in (ALPHA, BETA, WRONG):
        assert all(key not in body for body in bodies)
        for server in auth_servers.values():
            assert key not in server.stderr()


@pytest.fixture(scope="module")
def exposed_host_stderr(serving_project: ServingProject) -> Iterator[dict[str, str]]:
    """stderr of `mlserve serve --host 192.0.2.1` without and with a key, run side by side.

    192.0.2.1 (TEST-NET-1) is never assigned here: the bind fails right after the warning, so
    nothing is ever exposed beyond loopback.
    """
    settings = {"no-key": {}, "key": {"MLSERVE_API_KEY": ALPHA}}
    processes = {
        name: subprocess.Popen(
            # gRPC off: its port would be bound (and refused) before the HTTP one
            [MLSERVE, "serve", IRIS, "--host", "192.0.2.1", "--port", "9", "--grpc-port", "0"],
            cwd=serving_project.root,
            env=server_environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for name, env in settings.items()
    }
    try:
        # undo the console's line wrapping
        yield {
            name: " ".join(process.communicate(timeout=90)[1].decode().split())
            for name, process in processes.items()
        }
    finally:
        for process in processes.values():
            kill_group(process)


def test_exposed_host_without_a_key_warns(exposed_host_stderr: dict[str, str]) -> None:
    stderr = exposed_host_stderr["no-key"]
    assert "warning: listening on 192.0.2.1 with no API key" in stderr
    assert "set MLSERVE_API_KEY" in stderr
    assert '"message":"exposed without auth"' in stderr


def test_exposed_host_with_a_key_does_not_warn(exposed_host_stderr: dict[str, str]) -> None:
    stderr = exposed_host_stderr["key"]
    assert "cannot assign requested address" in stderr.lower()  # it got as far as binding
    assert "no API key" not in stderr
    assert ALPHA not in stderr
