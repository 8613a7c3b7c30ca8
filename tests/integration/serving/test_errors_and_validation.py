"""Every bad request gets its status code and a JSON {"error": ...} body naming the fault.

Also the NaN/inf policies and the request body limit, each on a server started with that setting.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_harness import (
    CHURN,
    IRIS,
    IRIS_FEATURES,
    PRICE,
    LiveServer,
    ServingProject,
    binary_request,
    launch,
    shutdown,
    v2_matrix_request,
)

ROW = [5.1, 3.5, 1.4, 0.2]
MATRIX = {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": ROW}


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    """``response`` is ``status`` with a JSON body holding only an error naming ``fragment``
    (on MLflow's /invocations with MLflow's error_code and message beside it)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if response.request.url.path == "/invocations":
        assert set(body) == {"error", "error_code", "message"}
        assert body["message"] == body["error"]
    else:
        assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert fragment in body["error"]


def tensor(**changes: Any) -> dict[str, Any]:
    """MATRIX with some fields changed (None removes a field)."""
    changed = {**MATRIX, **changes}
    return {k: v for k, v in changed.items() if v is not None}


# -- OIP v2 bad requests ------------------------------------------------------------------------------

V2_BAD_JSON = [
    ({"inputs": [tensor(shape=[1, 3], data=ROW[:3])]}, "expected shape [rows, 4]"),
    ({"inputs": [tensor(shape=[4], data=ROW)]}, "expected shape [rows, 4]"),
    ({"inputs": [tensor(shape=[1, 2, 2])]}, "expected shape [rows, 4]"),
    ({"inputs": [tensor(shape=[2, 4])]}, "shape needs 8 elements, got 4"),
    ({"inputs": [tensor(data=[*ROW, 1.0])]}, "shape needs 4 elements, got 5"),
    ({"inputs": [tensor(data=[[1.0, 2.0], [3.0]])]}, "ragged"),
    ({"inputs": [tensor(data=["a", "b", "c", "d"])]}, "FP64 data must be numbers"),
    ({"inputs": [tensor(datatype="INT32")]}, "INT32 data must be whole numbers"),
    ({"inputs": [tensor(datatype="INT8", data=[1, 2, 3, 300])]}, "out of range for INT8"),
    ({"inputs": [tensor(datatype="UINT16", data=[1, 2, 3, -1])]}, "out of range for UINT16"),
    ({"inputs": [tensor(datatype="BOOL", data=[1, 0, 1, 0])]}, "BOOL data must be true or false"),
    ({"inputs": [tensor(datatype="BYTES", data=[1, 2, 3, 4])]}, "BYTES data must be strings"),
    ({"inputs": [tensor(datatype="FLOAT64")]}, "unknown datatype 'FLOAT64'"),
    ({"inputs": [tensor(datatype=None)]}, "unknown datatype None"),
    ({"inputs": [tensor(shape=None)]}, "'shape' must be a list"),
    ({"inputs": [tensor(shape=[1, -4])]}, "'shape' must be a list"),
    ({"inputs": [tensor(shape=[1, True])]}, "'shape' must be a list"),
    ({"inputs": [tensor(shape=[2**32, 2**32], data=[])]}, "shape needs"),
    ({"inputs": [tensor(shape=[0, 2**63], data=[])]}, "too large"),
    ({"inputs": [tensor(data=None)]}, "has no 'data'"),
    ({"inputs": [tensor(name=None)]}, "has no 'name'"),
    ({"inputs": [tensor(name="")]}, "has no 'name'"),
    ({"inputs": [tensor(parameters=[1])]}, "'parameters' must be an object"),
    ({"inputs": [tensor(shape=[0, 4], data=[])]}, "no rows"),
    ({"inputs": [tensor(parameters={"binary_data_size": 32})]}, "binary_data_size 32 exceeds"),
    ({"inputs": ["input-0"]}, "inputs[0] must be an object"),
    ({"inputs": []}, "'inputs' must be a non-empty list"),
    ({"inputs": {"input-0": ROW}}, "'inputs' must be a non-empty list"),
    ({"instances": [ROW]}, "'inputs' must be a non-empty list"),
    ({"inputs": [MATRIX], "outputs": {"name": "predict"}}, "'outputs' must be a list"),
    ({"inputs": [MATRIX], "outputs": [{"binary_data": True}]}, "outputs[0] must be an object"),
    ({"inputs": [MATRIX], "outputs": [{"name": "explain"}]}, "unknown output 'explain'"),
    ({"inputs": [MATRIX], "parameters": [1]}, "'parameters' must be an object"),
    ([MATRIX], "must be a JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), V2_BAD_JSON)
def test_v2_bad_request_is_400(live_server: LiveServer, body: Any, fragment: str) -> None:
    response = httpx.post(f"{live_server.url}/v2/models/{IRIS}/infer", json=body)
    assert_error(response, 400, fragment)


PER_FEATURE = [
    {"name": "x1", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]},
    {"name": "x2", "datatype": "FP64", "shape": [2], "data": [3.0, 4.0]},
]


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([PER_FEATURE[0]], "missing feature column(s): 'x2'"),
        ([PER_FEATURE[0], {**PER_FEATURE[1], "shape": [1], "data": [3.0]}], "same number of rows"),
        ([PER_FEATURE[0], {**PER_FEATURE[1], "shape": [1, 2]}], "shape [rows]"),
        ([PER_FEATURE[0], {**PER_FEATURE[1], "datatype": "BYTES", "data": ["a", "b"]}], "'x2'"),
        (
            [
                {**PER_FEATURE[0], "shape": [0], "data": []},
                {**PER_FEATURE[1], "shape": [0], "data": []},
            ],
            "no rows",
        ),
    ],
)
def test_v2_per_feature_bad_request_is_400(
    live_server: LiveServer, inputs: list[dict[str, Any]], fragment: str
) -> None:
    response = httpx.post(f"{live_server.url}/v2/models/{PRICE}/infer", json={"inputs": inputs})
    assert_error(response, 400, fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "malformed JSON"),
        (b"{", "malformed JSON"),
        (b'{"inputs": [}', "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_v2_malformed_json_is_400(live_server: LiveServer, content: bytes, fragment: str) -> None:
    response = httpx.post(
        f"{live_server.url}/v2/models/{IRIS}/infer",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, fragment)


def test_v2_binary_framing_errors_are_400(live_server: LiveServer) -> None:
    url = f"{live_server.url}/v2/models/{IRIS}/infer"
    content, headers = binary_request([("input-0", np.zeros((2, 4), dtype="<f4"), "FP32")])
    header_length = int(headers["inference-header-content-length"])

    cases = [
        ({"inference-header-content-length": "abc"}, content, "must be a number of bytes"),
        ({"inference-header-content-length": str(len(content) + 1)}, content, "but the body has"),
        ({"inference-header-content-length": str(header_length - 3)}, content, "malformed JSON"),
        ({}, content + b"\x00" * 4, "bytes of binary data no input claims"),
        ({}, content[:-4], "binary_data_size 32 exceeds"),
    ]
    for changed_headers, body, fragment in cases:
        response = httpx.post(url, content=body, headers={**headers, **changed_headers})
        assert_error(response, 400, fragment)

    as_fp64 = content.replace(b'"FP32"', b'"FP64"')  # 32 bytes hold 4 FP64, not 8
    response = httpx.post(url, content=as_fp64, headers=headers)
    assert_error(response, 400, "do not hold 8 FP64 elements")


def test_v2_truncated_bytes_element_is_400(live_server: LiveServer) -> None:
    document = {
        "inputs": [
            {"name": n, "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}
            for n in ("plan",)
        ]
    }
    header = json.dumps(document).encode()
    body = header + (100).to_bytes(4, "little") + b"ab"  # says 100 bytes follow, sends 2
    response = httpx.post(
        f"{live_server.url}/v2/models/{CHURN}/infer",
        content=body,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert_error(response, 400, "BYTES element longer than the data sent")


def test_regressor_has_no_probabilities(live_server: LiveServer) -> None:
    body = v2_matrix_request([[1.0, 2.0]], outputs=[{"name": "predict_proba"}])
    response = httpx.post(f"{live_server.url}/v2/models/{PRICE}/infer", json=body)
    assert_error(response, 400, "unknown output 'predict_proba'")
    response = httpx.post(
        f"{live_server.url}/v1/models/{PRICE}:predict",
        json={"instances": [[1.0, 2.0]], "probabilities": True},
    )
    assert_error(response, 400, "does not give probabilities")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/v2/models/nosuch/infer", "nosuch"),
        ("/v2/models/nosuch/versions/1/infer", "nosuch"),
        ("/v2/models/iris/versions/99/infer", "99"),
        ("/v1/models/nosuch:predict", "nosuch"),
        ("/v1/models/iris/versions/99:predict", "99"),
    ],
)
def test_unknown_model_or_version_infer_is_404(
    live_server: LiveServer, path: str, fragment: str
) -> None:
    response = httpx.post(f"{live_server.url}{path}", json={"inputs": [MATRIX], "instances": [ROW]})
    assert_error(response, 404, fragment)


def test_unknown_route_and_method_are_json(live_server: LiveServer) -> None:
    assert_error(httpx.get(f"{live_server.url}/v3/nothing"), 404, "Not Found")
    assert_error(httpx.get(f"{live_server.url}/v2/models/{IRIS}/infer"), 405, "Method Not Allowed")


# -- /v1 bad requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "body", "fragment"),
    [
        (PRICE, {"rows": [[1, 2]]}, '"instances"'),
        (PRICE, [[1, 2]], '"instances"'),
        (PRICE, {"instances": []}, "non-empty list"),
        (PRICE, {"instances": [[1, 2, 3]]}, "each instance must list 2 feature values (x1, x2)"),
        (PRICE, {"instances": [[1, 2], [3]]}, "each instance must list 2"),
        (PRICE, {"instances": [[1, "abc"]]}, "row 0: feature 'x2' is not a number: 'abc'"),
        (PRICE, {"instances": [{"x1": 1, "x2": 2}, [1, 2]]}, "every instance must be an object"),
        (
            PRICE,
            {"instances": [{"x1": [1, 2], "x2": 3}]},
            "feature 'x1' must be one value, not a list",
        ),
        (PRICE, {"instances": [{"x1": 1, "x2": 3}, {"x1": [2], "x2": 3}]}, "feature 'x1'"),
        (PRICE, {"instances": [[1, 2]], "parameters": [1]}, "'parameters' must be an object"),
        (CHURN, {"instances": [["pro", "eu", 1.0]]}, "each instance must list 4"),
        (
            CHURN,
            {"instances": [{"plan": ["pro"], "region": "eu", "monthly": 1, "tenure": 2}]},
            "row 0: feature 'plan' must be one value, not a list or object",
        ),
        (
            CHURN,
            {"instances": [{"plan": "pro", "region": "eu", "monthly": "lots", "tenure": 2}]},
            "row 0: feature 'monthly' is not a number: 'lots'",
        ),
    ],
)
def test_v1_bad_request_is_400(
    live_server: LiveServer, model: str, body: Any, fragment: str
) -> None:
    response = httpx.post(f"{live_server.url}/v1/models/{model}:predict", json=body)
    assert_error(response, 400, fragment)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": {"x1": 1, "x2": 2}}, "column 'x1' must be a list of values"),
        ({"inputs": {"x1": "12", "x2": "34"}}, "column 'x1' must be a list of values"),
        ({"inputs": {"x1": [], "x2": []}}, "no rows"),
        ({"dataframe_split": {"columns": ["x1", "x2"], "data": []}}, "no rows"),
    ],
)
def test_invocations_shapeless_inputs_are_400(
    live_server: LiveServer, body: Any, fragment: str
) -> None:
    response = httpx.post(f"{live_server.url}/invocations?model={PRICE}", json=body)
    assert_error(response, 400, fragment)


# -- input rules in the default configuration, on the shared server --------------------------------


def churn_record(**changes: Any) -> dict[str, Any]:
    """One valid churn instance with some values changed."""
    return {"plan": "pro", "region": "eu", "monthly": 60.0, "tenure": 12, **changes}


@pytest.mark.parametrize("door", ["records", "json-nan-token", "csv"])
def test_missing_values_are_scored_where_the_model_fills_them_in(
    live_server: LiveServer, serving_project: ServingProject, door: str
) -> None:
    # mlserve train imputes every column, including tenure and region, which had no missing
    # value in training: the model fills them in, so every door scores these rows.
    rows = [
        churn_record(plan=None),
        churn_record(monthly=None),
        churn_record(tenure=None),
        churn_record(region=None),
    ]
    if door == "records":
        response = httpx.post(
            f"{live_server.url}/v1/models/{CHURN}:predict", json={"instances": rows}
        )
    elif door == "json-nan-token":  # what Python's json.dumps writes for a float NaN
        body = json.dumps({"dataframe_records": [churn_record(monthly=float("nan"))] * 2})
        assert "NaN" in body
        response = httpx.post(
            f"{live_server.url}/invocations?model={CHURN}",
            content=body.encode(),
            headers={"content-type": "application/json"},
        )
        rows = [churn_record(monthly=None)] * 2
    else:
        response = httpx.post(
            f"{live_server.url}/invocations?model={CHURN}",
            content=pd.DataFrame(rows).to_csv(index=False).encode(),
            headers={"content-type": "text/csv"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == serving_project.predict(CHURN, rows).tolist()


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        (churn_record(monthly="inf"), "row 1: feature 'monthly' is not finite: 'inf'"),
        (churn_record(tenure="-inf"), "row 1: feature 'tenure' is not finite: '-inf'"),
        (churn_record(tenure=1e400), "row 1: feature 'tenure' is not finite: 'inf'"),
    ],
)
def test_infinities_are_rejected_naming_the_row_and_feature(
    live_server: LiveServer, row: dict[str, Any], fragment: str
) -> None:
    response = httpx.post(
        f"{live_server.url}/v1/models/{CHURN}:predict",
        content=json.dumps({"instances": [churn_record(), row]}).encode(),
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, fragment)


def test_missing_and_infinite_values_in_numeric_matrices_are_rejected(
    live_server: LiveServer,
) -> None:
    # The iris pipelines have no imputer and scikit-learn refuses NaN: missing is refused.
    url = f"{live_server.url}/v2/models/{IRIS}/infer"
    with_null = v2_matrix_request([ROW, [5.0, None, 1.0, 0.1]])
    assert_error(
        httpx.post(url, json=with_null),
        400,
        "row 1: feature 'sepal_width' is missing, and this model cannot fill it in",
    )
    values = np.array([ROW, [5.0, 3.0, np.inf, 0.1]], dtype="<f8")
    content, headers = binary_request([("input-0", values, "FP64")])
    response = httpx.post(url, content=content, headers=headers)
    assert_error(response, 400, "row 1: feature 'petal_length' is not finite: 'inf'")


def test_inf_in_binary_per_feature_tensors_is_rejected(live_server: LiveServer) -> None:
    content, headers = binary_request(
        [
            ("plan", np.array(["pro"], dtype=object), "BYTES"),
            ("region", np.array(["eu"], dtype=object), "BYTES"),
            ("monthly", np.array([np.inf]), "FP64"),
            ("tenure", np.array([3], dtype="<i8"), "INT64"),
        ]
    )
    response = httpx.post(
        f"{live_server.url}/v2/models/{CHURN}/infer", content=content, headers=headers
    )
    assert_error(response, 400, "row 0: feature 'monthly' is not finite: 'inf'")


def test_extra_columns_are_ignored_by_default_in_every_format(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    expected = serving_project.predict(PRICE, [[1.0, 2.0]]).tolist()
    record = {"x1": 1.0, "x2": 2.0, "x9": "anything"}
    answers = [
        httpx.post(f"{live_server.url}/v1/models/{PRICE}:predict", json={"instances": [record]}),
        httpx.post(
            f"{live_server.url}/invocations?model={PRICE}",
            json={"dataframe_split": {"columns": ["x1", "x2", "x9"], "data": [[1.0, 2.0, "a"]]}},
        ),
        httpx.post(
            f"{live_server.url}/invocations?model={PRICE}",
            content=b"x9,x2,x1\nz,2.0,1.0\n",
            headers={"content-type": "text/csv"},
        ),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["predictions"] == expected
    oip = httpx.post(
        f"{live_server.url}/v2/models/{PRICE}/infer",
        json={"inputs": [*PER_FEATURE, {**PER_FEATURE[0], "name": "x9"}]},
    )
    assert oip.status_code == 200, oip.text


# -- servers with other settings: stricter and looser input rules, a small body limit ----------------

BODY_LIMIT_BYTES = 4096


@pytest.fixture(scope="module")
def policy_servers(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """Servers with missing_values reject; extra_columns reject with churn's unknown categories
    accepted (a per-model option); and a 4 KiB body limit, started together."""
    logs = tmp_path_factory.mktemp("policy-logs")
    settings = {
        "reject": {"MLSERVE_MISSING_VALUES": "reject"},
        "rules": {
            "MLSERVE_EXTRA_COLUMNS": "reject",
            "MLSERVE_MODELS__CHURN__UNKNOWN_CATEGORIES": "accept",
        },
        "small-body": {"MLSERVE_MAX_REQUEST_BYTES": str(BODY_LIMIT_BYTES)},
    }
    servers: dict[str, LiveServer] = {}
    try:
        for key, env in settings.items():
            servers[key] = launch(serving_project.root, CHURN, IRIS, env=env, log_dir=logs)
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            shutdown(server)


def test_reject_policy_refuses_missing_values_even_where_the_model_fills_them(
    policy_servers: dict[str, LiveServer],
) -> None:
    url = f"{policy_servers['reject'].url}/v1/models/{CHURN}:predict"
    response = httpx.post(url, json={"instances": [churn_record(monthly=None)]})
    assert_error(
        response,
        400,
        "row 0: feature 'monthly' is missing, and missing values are refused for this model",
    )
    response = httpx.post(url, json={"instances": [churn_record(plan=None)]})
    assert_error(response, 400, "row 0: feature 'plan' is missing")
    assert httpx.post(url, json={"instances": [churn_record()]}).status_code == 200


def test_accepted_unknown_categories_are_scored_and_counted_per_feature(
    policy_servers: dict[str, LiveServer], serving_project: ServingProject
) -> None:
    server = policy_servers["rules"]
    rows = [churn_record(plan="enterprise"), churn_record(), churn_record(region="mars")]
    response = httpx.post(f"{server.url}/v1/models/{CHURN}:predict", json={"instances": rows})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == serving_project.predict(CHURN, rows).tolist()
    metrics = httpx.get(f"{server.url}/metrics").text
    version = serving_project.versions[CHURN]
    for feature in ("plan", "region"):
        line = (
            f'mlserve_unknown_categories_total{{feature="{feature}",model="{CHURN}",'
            f'version="{version}"}} 1.0'
        )
        assert line in metrics


def test_extra_columns_policy_reject_refuses_them_in_every_format(
    policy_servers: dict[str, LiveServer],
) -> None:
    server = policy_servers["rules"]
    reason = "unknown column(s) 'x9', and extra columns are refused for this model"
    record = {**churn_record(), "x9": 1}
    responses = [
        httpx.post(f"{server.url}/v1/models/{CHURN}:predict", json={"instances": [record]}),
        httpx.post(
            f"{server.url}/invocations?model={CHURN}",
            content=pd.DataFrame([record]).to_csv(index=False).encode(),
            headers={"content-type": "text/csv"},
        ),
        httpx.post(
            f"{server.url}/v2/models/{IRIS}/infer",
            json={
                "inputs": [
                    {"name": n, "datatype": "FP64", "shape": [1], "data": [v]}
                    for n, v in zip([*IRIS_FEATURES, "x9"], [*ROW, 1.0], strict=True)
                ]
            },
        ),
    ]
    for response in responses:
        assert_error(response, 400, f"row 0: {reason}")
    plain = httpx.post(
        f"{server.url}/v1/models/{CHURN}:predict", json={"instances": [churn_record()]}
    )
    assert plain.status_code == 200, plain.text


def test_body_over_the_limit_with_content_length_is_413(
    policy_servers: dict[str, LiveServer],
) -> None:
    server = policy_servers["small-body"]
    rows = [ROW] * 400  # about 8 KiB of JSON
    body = json.dumps(v2_matrix_request(rows)).encode()
    assert len(body) > BODY_LIMIT_BYTES
    response = httpx.post(
        f"{server.url}/v2/models/{IRIS}/infer",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 413, f"limit of {BODY_LIMIT_BYTES} bytes")
    small = httpx.post(f"{server.url}/v2/models/{IRIS}/infer", json=v2_matrix_request([ROW]))
    assert small.status_code == 200


@pytest.mark.parametrize(
    "path", [f"/v2/models/{IRIS}/infer", f"/v1/models/{IRIS}:predict", f"/invocations?model={IRIS}"]
)
def test_chunked_body_over_the_limit_is_413(
    policy_servers: dict[str, LiveServer], path: str
) -> None:
    server = policy_servers["small-body"]
    body = json.dumps({**v2_matrix_request([ROW] * 200), "instances": [ROW] * 200}).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends Transfer-Encoding: chunked
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    response = httpx.post(
        f"{server.url}{path}", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_error(response, 413, f"limit of {BODY_LIMIT_BYTES} bytes")


def test_chunked_body_under_the_limit_is_served(
    policy_servers: dict[str, LiveServer], serving_project: ServingProject
) -> None:
    body = json.dumps(v2_matrix_request([ROW, ROW])).encode()
    response = httpx.post(
        f"{policy_servers['small-body'].url}/v2/models/{IRIS}/infer",
        content=iter([body[:10], body[10:]]),
    )
    assert response.status_code == 200, response.text
    predicted = response.json()["outputs"][0]["data"]
    assert predicted == serving_project.predict(IRIS, [ROW, ROW]).tolist()


def test_oversized_content_length_is_refused_before_the_body_is_read(
    policy_servers: dict[str, LiveServer],
) -> None:
    """A client that announces 1 GB gets 413 at once, without sending it."""
    server = policy_servers["small-body"]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /v2/models/{IRIS}/infer HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n".encode()
        )
        reply = _read_http_response(sock)
    assert reply.startswith("HTTP/1.1 413")
    assert f"limit of {BODY_LIMIT_BYTES} bytes" in reply


def _read_http_response(sock: socket.socket) -> str:
    """Headers and body of one response: headers and body may arrive in separate segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode("latin-1")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("latin-1")
