"""Every runtime through every door: small real models of each framework, trained here and
registered with the real `mlserve register`, served by one real `mlserve serve`, and asked the
same rows through OIP v2 (JSON and binary), /v1, /invocations (JSON and CSV), gRPC,
`mlserve predict`, `mlserve batch`, batched concurrent requests and the cache; their
predictions logged, exported, labelled and checked for drift.

Answers are compared with the framework's own ``predict`` and ``predict_proba`` on the same rows
(framework_models.py): classes exactly; numbers bit for bit where the encoding keeps them
(binary tensors, gRPC raw contents, Parquet), and through JSON to the last bit of their own
dtype (float repr round trips).

Each test is parametrized by model, so a failure names the framework and the door.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from framework_models import FACTORIES, FEATURES, TARGET, TEST_ROWS, Made, make_all
from serving_harness import (
    MLSERVE,
    LiveServer,
    binary_request,
    free_port,
    running_server,
    server_environment,
)

from mlserve.monitoring.predlog import PredictionLogStore
from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb
from mlserve.serving.grpc.stub import InferenceStub

pytestmark = pytest.mark.slow

MODELS = list(FACTORIES)
CLI_TIMEOUT_S = 180
HTTP_TIMEOUT_S = 60
BATCHED_REQUESTS = len(TEST_ROWS)
"""One-row requests sent at once to one model (a test row each): three batches' worth."""
BATCH_OPTIONS = {"cache": True, "max_batch_size": 8, "max_batch_wait_ms": 200}
"""Every model caches its answers; a batch waits up to 200 ms for 8 rows (a lone request
still runs at once)."""


# -- the project: models made, registered with the CLI, served by one server ----------------------


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`mlserve ARGS` in ``root`` (its embedded registry and prediction log)."""
    return subprocess.run(
        [MLSERVE, *args],
        cwd=root,
        env=server_environment({"COLUMNS": "200", "NO_COLOR": "1"}),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def described(result: subprocess.CompletedProcess[str]) -> str:
    """A command's exit code and output, for an assertion message."""
    return (
        f"exit {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )


@dataclass
class Project:
    """The folder, each model as made, each registration's result, and the running server."""

    root: Path
    made: dict[str, Made]
    registered: dict[str, subprocess.CompletedProcess[str]]
    server: LiveServer
    grpc_port: int
    rows_csv: Path
    logged: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)
    """Model -> (request id, predictions) of its request in the prediction log."""

    def made_and_served(self, name: str) -> Made:
        """The model as made, after checking it registered and the server loaded it (else the
        test fails with the registration's or the load's error)."""
        result = self.registered[name]
        if result.returncode != 0:
            pytest.fail(f"`mlserve register` failed for {name}:\n{described(result)}")
        response = httpx.get(f"{self.server.url}/v1/models/{name}", timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        status = response.json()
        if not status["ready"]:
            pytest.fail(f"the server did not load {name}: {status}")
        return self.made[name]

    def url(self, path: str) -> str:
        """The server's URL of ``path``."""
        return f"{self.server.url}{path}"


def register(root: Path, name: str, made: Made) -> subprocess.CompletedProcess[str]:
    """`mlserve register` with the framework judged from the file, the training data's names,
    dtypes and reference profile, and the production alias."""
    return run_cli(
        root,
        "register",
        str(made.path),
        "--name",
        name,
        "--signature-from",
        str(made.training),
        "--target",
        TARGET,
        "--alias",
        "production",
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """Every framework's model registered in one project and served by one server (HTTP and
    gRPC), each cached and batched. A model that fails to register is left out of the server;
    its tests fail with the registration's error."""
    root = tmp_path_factory.mktemp("frameworks")
    made = make_all(root / "made")
    rows_csv = root / "rows.csv"
    TEST_ROWS.to_csv(rows_csv, index=False)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores, shared with others
        futures = {name: pool.submit(register, root, name, m) for name, m in made.items()}
        registered = {name: future.result() for name, future in futures.items()}
    options = dict.fromkeys(made, BATCH_OPTIONS)
    grpc_port = free_port()
    with running_server(
        root,
        "--grpc-port",
        str(grpc_port),
        env={
            "MLSERVE_MODELS": json.dumps(options),
            # Every predict call in the pool, off the event loop: requests that arrive while
            # one runs are queued and batched, rather than each answered inline in turn.
            "MLSERVE_INLINE_PREDICT_MAX_MS": "0",
        },
        log_dir=tmp_path_factory.mktemp("frameworks-server"),
        wait="loaded",  # a model whose runtime fails to load keeps the server from ready
    ) as server:
        yield Project(root, made, registered, server, grpc_port, rows_csv)


# -- comparing answers ----------------------------------------------------------------------------


def assert_labels(actual: Any, expected: np.ndarray, what: str) -> None:
    """Predicted classes exactly, with their type: integers stay integers."""
    values = actual.tolist() if isinstance(actual, np.ndarray) else list(actual)
    if expected.dtype.kind in "iu":
        assert all(type(v) is int for v in values), (what, values)
    assert values == expected.tolist(), what


def assert_numbers(
    actual: Any, expected: np.ndarray, what: str, *, binary: bool, deterministic: bool
) -> None:
    """Numbers bit for bit where both the encoding and the framework keep them: a binary
    encoding (tensors, gRPC raw, Parquet) every bit, whatever float width the server chose;
    JSON the value of the expected dtype (the shortest repr of a float32 or float64 reads back
    as the same value). A framework whose last bits depend on how rows reach it (see
    Made.deterministic) is held to a few units in the last place of its dtype."""
    if binary:
        received = np.asarray(actual)
        assert received.dtype.kind == "f", (what, received.dtype)
    else:
        received = np.asarray(actual, dtype=expected.dtype)
    assert received.shape == expected.shape, (what, received.shape, expected.shape)
    if deterministic:
        np.testing.assert_array_equal(
            received.astype(np.float64), expected.astype(np.float64), err_msg=what
        )
    else:
        eps = float(np.finfo(expected.dtype).eps)
        np.testing.assert_allclose(
            received.astype(np.float64),
            expected.astype(np.float64),
            rtol=16 * eps,
            atol=eps,
            err_msg=what,
        )


def assert_predictions(
    actual: Any, made: Made, what: str, *, binary: bool, rows: slice = slice(None)
) -> None:
    """``predict`` answers of the test rows ``rows``: classes exactly (integers as integers),
    a regressor's numbers as ``assert_numbers`` holds them."""
    expected = made.predict[rows]
    if expected.dtype.kind == "f":
        assert_numbers(actual, expected, what, binary=binary, deterministic=made.deterministic)
    else:
        assert_labels(actual, expected, what)


def assert_probabilities(
    actual: Any, made: Made, what: str, *, binary: bool, rows: slice = slice(None)
) -> None:
    """``predict_proba`` answers of the test rows ``rows``, a column per class."""
    assert made.predict_proba is not None
    assert_numbers(
        actual, made.predict_proba[rows], what, binary=binary, deterministic=made.deterministic
    )


def outputs_wanted(made: Made) -> list[str]:
    """The outputs to ask for: predict, and predict_proba when the framework gives it."""
    return ["predict", "predict_proba"] if made.predict_proba is not None else ["predict"]


def post_json(
    project: Project, path: str, body: Any, request_id: str | None = None
) -> httpx.Response:
    """POST a JSON body (with a chosen request id)."""
    headers = {"x-request-id": request_id} if request_id else {}
    return httpx.post(project.url(path), json=body, headers=headers, timeout=HTTP_TIMEOUT_S)


def rows_array() -> np.ndarray:
    """The test rows as a float64 matrix in feature order."""
    return TEST_ROWS[FEATURES].to_numpy(dtype=np.float64)


# -- registration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_registered_with_the_framework_judged_from_the_file(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    shown = run_cli(project.root, "models", "show", f"{name}@production", "--json")
    assert shown.returncode == 0, described(shown)
    version = json.loads(shown.stdout)
    assert version["framework"] == made.framework, version
    status = httpx.get(project.url(f"/v1/models/{name}"), timeout=HTTP_TIMEOUT_S).json()
    assert status["framework"] == made.framework
    signature = status["signature"]
    assert [f["name"] for f in signature["inputs"]] == FEATURES
    if made.predict.dtype.kind == "f":
        assert signature["task"] == "regression"
    if made.classes:
        assert signature["task"] == "classification"
        assert [str(c) for c in signature["classes"]] == [str(c) for c in made.classes]


# -- HTTP doors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_v2_json(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    rows = rows_array()
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.reshape(-1).tolist(),
            }
        ],
        "outputs": [{"name": o} for o in outputs_wanted(made)],
    }
    response = post_json(project, f"/v2/models/{name}/infer", body)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["model_name"] == name
    outputs = {o["name"]: o for o in document["outputs"]}
    assert list(outputs) == outputs_wanted(made)
    predict = outputs["predict"]
    assert predict["shape"] == [len(rows)]
    if made.predict.dtype.kind in "iu":
        assert predict["datatype"].startswith("INT"), predict["datatype"]
    assert_predictions(predict["data"], made, f"{name} v2 json predict", binary=False)
    if made.predict_proba is not None:
        proba = outputs["predict_proba"]
        assert proba["shape"] == list(made.predict_proba.shape)
        values = np.asarray(proba["data"]).reshape(proba["shape"])
        assert_probabilities(values, made, f"{name} v2 json predict_proba", binary=False)


def decode_binary_outputs(response: httpx.Response) -> dict[str, tuple[str, np.ndarray]]:
    """Outputs of an OIP binary response: name -> (datatype, array), every one binary."""
    length = int(response.headers["inference-header-content-length"])
    document = json.loads(response.content[:length])
    offset, decoded = length, {}
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw = response.content[offset : offset + size]
        offset += size
        array = from_raw(raw, output["datatype"]).reshape(output["shape"])
        decoded[output["name"]] = (output["datatype"], array)
    assert offset == len(response.content), "binary data left over"
    return decoded


RAW_TYPES = {
    "FP64": "<f8",
    "FP32": "<f4",
    "INT64": "<i8",
    "INT32": "<i4",
    "UINT8": "<u1",
    "BOOL": "?",
}


def from_raw(raw: bytes, datatype: str) -> np.ndarray:
    """A tensor's little-endian bytes (or length-prefixed strings) as an array."""
    if datatype != "BYTES":
        return np.frombuffer(raw, dtype=RAW_TYPES[datatype])
    items, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "little")
        items.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return np.asarray(items, dtype=object)


def assert_typed_outputs(outputs: dict[str, tuple[str, np.ndarray]], made: Made, what: str) -> None:
    """Binary (or gRPC raw) outputs: labels as integers, numbers bit for bit."""
    assert list(outputs) == outputs_wanted(made), (what, list(outputs))
    datatype, predicted = outputs["predict"]
    if made.predict.dtype.kind in "iu":
        assert datatype.startswith(("INT", "UINT")), (what, datatype)
    assert_predictions(predicted, made, f"{what} predict", binary=True)
    if made.predict_proba is not None:
        datatype, proba = outputs["predict_proba"]
        assert datatype in ("FP32", "FP64"), (what, datatype)
        assert_probabilities(proba, made, f"{what} predict_proba", binary=True)


@pytest.mark.parametrize("name", MODELS)
def test_v2_binary_tensors(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    content, headers = binary_request(
        [("input-0", rows_array(), "FP64")],
        outputs=[{"name": o} for o in outputs_wanted(made)],
        parameters={"binary_data_output": True},
    )
    response = httpx.post(
        project.url(f"/v2/models/{name}/infer"),
        content=content,
        headers=headers,
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert_typed_outputs(decode_binary_outputs(response), made, f"{name} v2 binary")


@pytest.mark.parametrize("name", MODELS)
def test_v1_predict(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    body: dict[str, Any] = {"instances": TEST_ROWS.to_dict(orient="records")}
    if made.predict_proba is not None:
        body["probabilities"] = True
    response = post_json(project, f"/v1/models/{name}:predict", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_predictions(answer["predictions"], made, f"{name} v1 predictions", binary=False)
    if made.predict_proba is not None:
        assert [str(c) for c in answer["classes"]] == [str(c) for c in made.classes]
        assert_probabilities(
            answer["probabilities"], made, f"{name} v1 probabilities", binary=False
        )


@pytest.mark.parametrize("name", MODELS)
def test_invocations_dataframe_split_and_csv(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    columns = list(reversed(FEATURES))  # by name, in any order
    split = {
        "dataframe_split": {"columns": columns, "data": TEST_ROWS[columns].to_numpy().tolist()}
    }
    response = httpx.post(
        project.url("/invocations"), params={"model": name}, json=split, timeout=HTTP_TIMEOUT_S
    )
    assert response.status_code == 200, response.text
    assert_predictions(response.json()["predictions"], made, f"{name} mlflow split", binary=False)

    response = httpx.post(
        project.url("/invocations"),
        params={"model": name},
        content=TEST_ROWS.to_csv(index=False).encode(),
        headers={"content-type": "text/csv"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert_predictions(response.json()["predictions"], made, f"{name} mlflow csv", binary=False)


# -- gRPC -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_grpc_model_infer_raw(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    rows = rows_array()
    request = pb.ModelInferRequest(model_name=name, id=f"grpc-{name}")
    request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype("<f8").tobytes())
    for output in outputs_wanted(made):
        request.outputs.add(name=output)
    with grpc.insecure_channel(f"127.0.0.1:{project.grpc_port}") as channel:
        response = InferenceStub(channel).call("ModelInfer")(request, timeout=HTTP_TIMEOUT_S)
    assert response.id == f"grpc-{name}"
    assert response.model_name == name
    assert len(response.raw_output_contents) == len(response.outputs)  # raw in, raw out
    outputs = {
        tensor.name: (tensor.datatype, from_raw(raw, tensor.datatype).reshape(list(tensor.shape)))
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    assert_typed_outputs(outputs, made, f"{name} grpc")


TYPED_CONTENTS = {
    "BOOL": ("bool_contents", np.bool_),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
}
"""The typed field (and its values' dtype) of each datatype an answer may come in."""


@pytest.mark.parametrize("name", MODELS)
def test_grpc_model_infer_typed(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    rows = rows_array()
    request = pb.ModelInferRequest(model_name=name, id=f"typed-{name}")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.reshape(-1).tolist())
    for output in outputs_wanted(made):
        request.outputs.add(name=output)
    with grpc.insecure_channel(f"127.0.0.1:{project.grpc_port}") as channel:
        response = InferenceStub(channel).call("ModelInfer")(request, timeout=HTTP_TIMEOUT_S)
    assert response.id == f"typed-{name}"
    assert not response.raw_output_contents  # typed in, typed out
    outputs = {}
    for output in response.outputs:
        assert output.datatype in TYPED_CONTENTS, (name, output.name, output.datatype)
        field_name, dtype = TYPED_CONTENTS[output.datatype]
        values = np.asarray(getattr(output.contents, field_name), dtype=dtype)
        outputs[output.name] = (output.datatype, values.reshape(list(output.shape)))
    # protobuf floats and doubles keep every bit of their width
    assert_typed_outputs(outputs, made, f"{name} grpc typed")


# -- commands -------------------------------------------------------------------------------------


def assert_scored_table(table: pd.DataFrame, made: Made, what: str) -> None:
    """`mlserve predict` and `mlserve batch` output (Parquet keeps every bit): a prediction
    column, and a proba_CLASS column per class when probabilities were asked for."""
    assert len(table) == len(TEST_ROWS), what
    assert_predictions(table["prediction"].to_numpy(), made, f"{what} prediction", binary=True)
    if made.predict_proba is not None:
        columns = [f"proba_{c}" for c in made.classes]
        assert [c for c in table.columns if c.startswith("proba_")] == columns, what
        assert_probabilities(table[columns].to_numpy(), made, f"{what} proba", binary=True)


@pytest.mark.parametrize("name", MODELS)
def test_mlserve_predict_on_a_csv(project: Project, name: str, tmp_path: Path) -> None:
    made = project.made_and_served(name)
    output = tmp_path / "scores.parquet"
    proba = ["--proba"] if made.predict_proba is not None else []
    result = run_cli(
        project.root,
        "predict",
        f"{name}@production",
        str(project.rows_csv),
        *proba,
        "-o",
        str(output),
    )
    assert result.returncode == 0, described(result)
    assert_scored_table(pd.read_parquet(output), made, f"{name} mlserve predict")


@pytest.mark.parametrize("name", MODELS)
def test_mlserve_batch_on_a_csv(project: Project, name: str, tmp_path: Path) -> None:
    made = project.made_and_served(name)
    inputs = tmp_path / "customers.csv"
    TEST_ROWS.assign(id=[f"c{i}" for i in range(len(TEST_ROWS))]).to_csv(inputs, index=False)
    output = tmp_path / "scores.parquet"
    proba = ["--proba"] if made.predict_proba is not None else []
    result = run_cli(
        project.root,
        "batch",
        f"{name}@production",
        str(inputs),
        str(output),
        "--id-column",
        "id",
        *proba,
        "--no-progress",
    )
    assert result.returncode == 0, described(result)
    summary = json.loads(result.stdout)
    assert summary, result.stdout
    table = pd.read_parquet(output)
    assert table["id"].tolist() == [f"c{i}" for i in range(len(TEST_ROWS))]
    assert_scored_table(table, made, f"{name} mlserve batch")


# -- batching and the cache -----------------------------------------------------------------------


def metric_sum(project: Project, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on /metrics whose labels include ``labels``."""
    text = httpx.get(project.url("/metrics"), timeout=HTTP_TIMEOUT_S).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        found = dict(part.split("=", 1) for part in label_text.split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total


def one_row_each(project: Project, name: str, want_proba: bool) -> list[tuple[int, Any]]:
    """(status, JSON answer) of one /v1 request per test row, all written at once: every
    connection is opened first, then every request written, so they reach the server together
    (a client sending them one after another could be answered one at a time)."""
    sockets = [
        socket.create_connection(("127.0.0.1", project.server.port), timeout=HTTP_TIMEOUT_S)
        for _ in range(BATCHED_REQUESTS)
    ]
    try:
        for i, sock in enumerate(sockets):
            body = json.dumps(
                {"instances": [TEST_ROWS.iloc[i].tolist()], "probabilities": want_proba}
            ).encode()
            head = (
                f"POST /v1/models/{name}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
        answers = []
        for sock in sockets:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            answers.append(http_answer(b"".join(chunks)))
        return answers
    finally:
        for sock in sockets:
            sock.close()


def http_answer(raw: bytes) -> tuple[int, Any]:
    """Status and JSON body of a whole HTTP/1.1 response (Content-Length or chunked)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        decoded, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    return status, json.loads(body)


@pytest.mark.parametrize("name", MODELS)
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    project: Project, name: str
) -> None:
    made = project.made_and_served(name)
    assert len(TEST_ROWS) >= BATCHED_REQUESTS
    want_proba = made.predict_proba is not None
    calls_before = metric_sum(project, "mlserve_batch_size_count", model=name)
    rows_before = metric_sum(project, "mlserve_batch_size_sum", model=name)
    responses = one_row_each(project, name, want_proba)
    for i, (status, answer) in enumerate(responses):
        assert status == 200, (i, answer)
        what = f"{name} batched row {i}"
        # A row computed among other requests' rows: bit for bit when the framework is
        # deterministic (see Made.deterministic), as it is for trees.
        row = slice(i, i + 1)
        assert_predictions(answer["predictions"], made, what, binary=False, rows=row)
        if want_proba:
            assert_probabilities(answer["probabilities"], made, what, binary=False, rows=row)
    calls = metric_sum(project, "mlserve_batch_size_count", model=name) - calls_before
    rows = metric_sum(project, "mlserve_batch_size_sum", model=name) - rows_before
    assert rows == BATCHED_REQUESTS  # every row computed once
    assert calls < BATCHED_REQUESTS  # some predict calls answered several requests


@pytest.mark.parametrize("name", MODELS)
def test_a_repeated_request_is_a_cache_hit(project: Project, name: str) -> None:
    made = project.made_and_served(name)
    body: dict[str, Any] = {"instances": TEST_ROWS.iloc[2:7].to_numpy().tolist()}
    if made.predict_proba is not None:
        body["probabilities"] = True
    path = f"/v1/models/{name}:predict"
    computed = post_json(project, path, body, f"miss-{uuid.uuid4().hex}")
    assert computed.status_code == 200, computed.text
    hits_before = metric_sum(project, "mlserve_cache_hits_total", model=name)
    cached = post_json(project, path, body, f"hit-{uuid.uuid4().hex}")
    assert cached.status_code == 200, cached.text
    assert cached.content == computed.content
    assert metric_sum(project, "mlserve_cache_hits_total", model=name) == hits_before + 1
    answer = cached.json()
    assert_predictions(
        answer["predictions"], made, f"{name} cached", binary=False, rows=slice(2, 7)
    )
    if made.predict_proba is not None:
        proba = answer["probabilities"]
        assert_probabilities(proba, made, f"{name} cached", binary=False, rows=slice(2, 7))


# -- prediction log, feedback, drift --------------------------------------------------------------

LOG_WAIT_S = 30.0
"""How long the server's prediction log writer may take to write a request's rows."""


def logged_request(project: Project, name: str) -> tuple[str, list[Any]]:
    """(request id, predictions) of one OIP request of every test row, sent once per model,
    after waiting for the prediction log to hold its rows."""
    if name in project.logged:
        return project.logged[name]
    made = project.made_and_served(name)
    rows = rows_array()
    request_id = f"logged-{name}-{uuid.uuid4().hex}"
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.reshape(-1).tolist(),
            }
        ]
    }
    response = post_json(project, f"/v2/models/{name}/infer", body, request_id)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    predicted = response.json()["outputs"][0]["data"]
    assert_predictions(predicted, made, f"{name} logged request", binary=False)
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        store = PredictionLogStore(f"sqlite:///{project.root / '.mlserve' / 'predictions.db'}")
        try:
            found = [r for r in store.read_records(name) if r.request_id == request_id]
        finally:
            store.close()
        if len(found) == len(rows):
            break
        assert time.monotonic() < deadline, f"{name}: {len(found)} of {len(rows)} rows logged"
        time.sleep(0.1)
    project.logged[name] = (request_id, predicted)
    return request_id, predicted


@pytest.mark.parametrize("name", MODELS)
def test_log_export_has_the_logged_rows(project: Project, name: str, tmp_path: Path) -> None:
    made = project.made_and_served(name)
    request_id, _ = logged_request(project, name)
    export = tmp_path / "log.parquet"
    result = run_cli(project.root, "log", "export", f"{name}@production", "-o", str(export))
    assert result.returncode == 0, described(result)
    logged = pd.read_parquet(export)
    assert set(logged["model"]) == {name}
    mine = logged[logged["request_id"] == request_id].sort_values("row")
    assert mine["row"].tolist() == list(range(len(TEST_ROWS)))
    np.testing.assert_array_equal(mine[FEATURES].to_numpy(dtype=np.float64), rows_array())
    if made.predict.dtype.kind == "f":
        logged_values = mine["prediction"].astype(np.float64).tolist()
        assert_predictions(logged_values, made, f"{name} logged", binary=False)
    else:
        assert [str(v) for v in mine["prediction"]] == [str(v) for v in made.predict.tolist()]
    if made.predict_proba is not None:
        columns = [f"proba_{c}" for c in made.classes]
        assert_probabilities(mine[columns].to_numpy(), made, f"{name} logged", binary=False)


@pytest.mark.parametrize("name", MODELS)
def test_feedback_is_accepted_for_a_logged_request(project: Project, name: str) -> None:
    project.made_and_served(name)
    request_id, predicted = logged_request(project, name)
    # The true label of every row: here what was predicted (a class, or a regressor's number).
    items = [{"request_id": request_id, "row": i, "label": v} for i, v in enumerate(predicted)]
    never_sent = f"never-sent-{uuid.uuid4().hex}"
    items.append({"request_id": never_sent, "label": predicted[0]})
    feedback = post_json(project, f"/v1/models/{name}/feedback", {"feedback": items})
    assert feedback.status_code == 200, feedback.text
    assert feedback.json() == {"joined": len(predicted), "unknown": [never_sent]}


@pytest.mark.parametrize("name", MODELS)
def test_drift_runs_for_the_model(project: Project, name: str) -> None:
    project.made_and_served(name)
    logged_request(project, name)
    drift = run_cli(project.root, "drift", f"{name}@production", "--min-rows", "5", "--json")
    assert drift.returncode in (0, 9), described(drift)  # 9: drift detected, not an error
    report = json.loads(drift.stdout)
    assert (report["model"], report["status"]) in ((name, "drift"), (name, "no drift")), report
    assert report["detected"] == (drift.returncode == 9)
    tested = {f["name"] for f in report["features"] if f["method"] != "skipped"}
    # every input judged, and the predictions too: drift ran the model on its reference rows
    assert tested == {*FEATURES, "__prediction__"}, report["features"]
