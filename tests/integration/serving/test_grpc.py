"""The Open Inference Protocol over gRPC: tritonclient.grpc (sync and asyncio), the grpcio
health client and hand-built requests against real `mlserve serve` processes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_harness import (
    CHURN,
    IRIS,
    PRICE,
    START_TIMEOUT_S,
    LiveServer,
    ServingProject,
    free_port,
    launch,
    shutdown,
    wait_for_every_worker,
)
from tritonclient.utils import InferenceServerException

from mlserve.monitoring.predlog import PredictionLogStore
from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb
from mlserve.serving.grpc.stub import InferenceStub

ADMIN_KEY, INFERENCE_KEY = "admin-key-3333", "inference-key-4444"
CALL_TIMEOUT_S = 30.0
WAIT_LOG_S = 10.0


@dataclass
class GrpcServer:
    """A running server and its gRPC address."""

    live: LiveServer
    grpc_port: int
    log_url: str = ""

    @property
    def target(self) -> str:
        """host:port of the gRPC service."""
        return f"127.0.0.1:{self.grpc_port}"

    def triton(self) -> triton.InferenceServerClient:
        """A tritonclient gRPC client of this server."""
        return triton.InferenceServerClient(url=self.target)

    def stub(self) -> tuple[grpc.Channel, InferenceStub]:
        """A plain grpcio channel and the service's stub (close the channel)."""
        channel = grpc.insecure_channel(self.target)
        return channel, InferenceStub(channel)


def start(root: Path, *args: str, env: dict[str, str] | None = None, logs: Path) -> GrpcServer:
    """Launch a server with gRPC on a free port (not waited for)."""
    port = free_port()
    live = launch(root, *args, "--grpc-port", str(port), env=env, log_dir=logs)
    return GrpcServer(live, port)


@pytest.fixture(scope="module")
def servers(
    serving_project: ServingProject,
    tampered_project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, GrpcServer]]:
    """Servers started side by side: ``main`` (every production model, price cached, its own
    prediction log), ``keyed`` (inference and admin keys), ``tight`` (one queued request, a
    deadline of a microsecond), ``tampered`` (a model that failed to load)."""
    logs = tmp_path_factory.mktemp("grpc-logs")
    log_url = f"sqlite:///{logs / 'predictions.db'}"
    started: dict[str, GrpcServer] = {}
    try:
        started["main"] = start(
            serving_project.root,
            env={
                "MLSERVE_PREDICTION_LOG_URL": log_url,
                "MLSERVE_MODELS": json.dumps({PRICE: {"cache": True}}),
            },
            logs=logs,
        )
        started["main"].log_url = log_url
        started["keyed"] = start(
            serving_project.root,
            env={"MLSERVE_API_KEY": INFERENCE_KEY, "MLSERVE_ADMIN_API_KEY": ADMIN_KEY},
            logs=logs,
        )
        started["tight"] = start(
            serving_project.root,
            IRIS,
            env={
                "MLSERVE_MAX_QUEUE_REQUESTS": "1",
                "MLSERVE_REQUEST_TIMEOUT_S": "0.000001",
                "MLSERVE_INLINE_PREDICT_MAX_MS": "0",
                "MLSERVE_PREDICTION_LOG": "false",
            },
            logs=logs,
        )
        started["tampered"] = start(tampered_project, logs=logs)
        for name, server in started.items():
            if name == "tampered":
                server.live.wait_loaded()
            else:
                server.live.wait_ready()
        yield started
    finally:
        for server in started.values():
            shutdown(server.live)


@pytest.fixture
def main(servers: dict[str, GrpcServer]) -> GrpcServer:
    """The server most tests share."""
    return servers["main"]


def rows_of(count: int, seed: int = 0) -> np.ndarray:
    """``count`` iris-like rows of 4 features, two decimals."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 8.0, size=(count, 4)).round(2)


def triton_input(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    """A tritonclient input holding ``array`` (raw, as tritonclient always sends)."""
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def decoded(values: np.ndarray) -> list[Any]:
    """Predicted labels as Python values (BYTES come back as bytes)."""
    return [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]


def code_of(call: Any) -> grpc.StatusCode:
    """The status code a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- round trips ----------------------------------------------------------------------------------

SENT_AS = {
    "FP32": lambda rows: rows.astype(np.float32),
    "FP64": lambda rows: rows,
    "INT64": lambda rows: np.round(rows).astype(np.int64),
    "BOOL": lambda rows: rows > 4.0,
    "BYTES": lambda rows: rows.astype(str).astype(object),
}
"""How each datatype carries iris rows; the model sees the values as float64."""


@pytest.mark.parametrize("count", [1, 32, 1000])
@pytest.mark.parametrize("datatype", list(SENT_AS))
def test_tritonclient_round_trips(
    main: GrpcServer, serving_project: ServingProject, datatype: str, count: int
) -> None:
    sent = SENT_AS[datatype](rows_of(count, seed=count))
    as_float = np.asarray(sent.astype(str) if datatype == "BYTES" else sent, dtype=np.float64)
    client = main.triton()
    try:
        result = client.infer(
            IRIS,
            [triton_input("input-0", sent, datatype)],
            outputs=[
                triton.InferRequestedOutput("predict"),
                triton.InferRequestedOutput("predict_proba"),
            ],
            request_id=f"rt-{datatype}-{count}",
        )
    finally:
        client.close()
    response = result.get_response()
    assert response.id == f"rt-{datatype}-{count}"
    assert response.model_version == serving_project.versions[IRIS]
    assert len(response.raw_output_contents) == 2  # raw in, raw out
    assert decoded(result.as_numpy("predict")) == serving_project.predict(IRIS, as_float).tolist()
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), serving_project.predict_proba(IRIS, as_float), rtol=1e-9
    )


def test_asyncio_client_answers_100_concurrent_calls_with_their_ids_and_rows(
    main: GrpcServer, serving_project: ServingProject
) -> None:
    async def run() -> list[tuple[str, int, Any]]:
        client = triton_aio.InferenceServerClient(url=main.target)
        try:

            async def one(index: int) -> tuple[str, int, Any]:
                rows = rows_of(1 + index % 37, seed=index)
                result = await client.infer(
                    IRIS,
                    [triton_input("input-0", rows, "FP64")],
                    outputs=[triton.InferRequestedOutput("predict")],
                    request_id=f"call-{index}",
                )
                predicted = decoded(result.as_numpy("predict"))
                expected = serving_project.predict(IRIS, rows).tolist()
                return result.get_response().id, len(rows), predicted == expected

            return await asyncio.gather(*(one(i) for i in range(100)))
        finally:
            await client.close()

    answers = asyncio.run(run())
    assert [a[0] for a in answers] == [f"call-{i}" for i in range(100)]
    assert all(correct for _id, _rows, correct in answers)


def test_typed_contents_get_typed_outputs(
    main: GrpcServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    rows = churn_rows.assign(
        plan=churn_rows["plan"].fillna("pro"), monthly=churn_rows["monthly"].fillna(42.0)
    )
    request = pb.ModelInferRequest(model_name=CHURN, id="typed-1")
    for name, values, datatype, field_name in [
        ("plan", [v.encode() for v in rows["plan"]], "BYTES", "bytes_contents"),
        ("region", [v.encode() for v in rows["region"]], "BYTES", "bytes_contents"),
        ("monthly", rows["monthly"].tolist(), "FP64", "fp64_contents"),
        ("tenure", rows["tenure"].tolist(), "INT64", "int64_contents"),
    ]:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        getattr(tensor.contents, field_name).extend(values)
    request.outputs.add(name="predict")
    channel, stub = main.stub()
    with channel:
        response = stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
    assert response.id == "typed-1"
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("predict", "BYTES", [len(rows)])
    predicted = [v.decode() for v in output.contents.bytes_contents]
    assert predicted == serving_project.predict(CHURN, rows).tolist()


def test_regressor_answers_fp64(
    main: GrpcServer, serving_project: ServingProject, price_rows: pd.DataFrame
) -> None:
    array = price_rows.to_numpy()
    client = main.triton()
    try:
        result = client.infer(PRICE, [triton_input("input-0", array, "FP64")])
    finally:
        client.close()
    np.testing.assert_allclose(
        result.as_numpy("predict"), serving_project.predict(PRICE, array), rtol=1e-12
    )


# -- health and metadata --------------------------------------------------------------------------


def test_health_and_metadata_calls(main: GrpcServer, serving_project: ServingProject) -> None:
    client = main.triton()
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(IRIS)
        assert client.is_model_ready(IRIS, model_version=serving_project.versions[IRIS])
        server = client.get_server_metadata()
        assert server.name == "mlserve"
        assert "model_repository" in server.extensions
        meta = client.get_model_metadata(IRIS)
    finally:
        client.close()
    assert meta.name == IRIS
    assert serving_project.versions[IRIS] in meta.versions
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input-0", "FP64", [-1, 4])
    ]
    assert {t.name for t in meta.outputs} == {"predict", "predict_proba"}


def test_grpc_health_service(main: GrpcServer) -> None:
    with grpc.insecure_channel(main.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for service in ("", "inference.GRPCInferenceService", IRIS):
            request = health_pb2.HealthCheckRequest(service=service)
            assert health.Check(request, timeout=CALL_TIMEOUT_S).status == serving
        with pytest.raises(grpc.RpcError) as missing:
            health.Check(health_pb2.HealthCheckRequest(service="nosuch"), timeout=CALL_TIMEOUT_S)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# -- errors ---------------------------------------------------------------------------------------


def infer_request(**fields: Any) -> pb.ModelInferRequest:
    """A one-row iris request in raw form; ``fields`` override its parts."""
    request = pb.ModelInferRequest(model_name=IRIS)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    request.raw_input_contents.append(rows_of(1).tobytes())
    for name, value in fields.items():
        if name == "inputs":
            del request.inputs[:]
            request.inputs.extend(value)
        elif name == "raw":
            del request.raw_input_contents[:]
            request.raw_input_contents.extend(value)
        elif name == "outputs":
            request.outputs.extend(value)
        else:
            setattr(request, name, value)
    return request


def tensor(name: str = "input-0", datatype: str = "FP64", shape: tuple[int, ...] = (1, 4)) -> Any:
    """An input tensor entry."""
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)


MISTAKES = {
    "unknown model": (infer_request(model_name="nosuch"), grpc.StatusCode.NOT_FOUND),
    "unknown version": (infer_request(model_version="99"), grpc.StatusCode.NOT_FOUND),
    "no model name": (infer_request(model_name=""), grpc.StatusCode.INVALID_ARGUMENT),
    "wrong width": (
        infer_request(inputs=[tensor(shape=(2, 2))]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown datatype": (
        infer_request(inputs=[tensor(datatype="FP128")]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "bytes short of the shape": (
        infer_request(inputs=[tensor(shape=(2, 4))]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "raw count mismatch": (infer_request(raw=[]), grpc.StatusCode.INVALID_ARGUMENT),
    "negative shape": (
        infer_request(inputs=[tensor(shape=(-1, 4))]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "rejected row": (
        infer_request(raw=[np.array([[np.inf, 1, 1, 1]]).tobytes()]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
    "unknown output": (
        infer_request(outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_client_mistakes_get_their_status_codes(main: GrpcServer, mistake: str) -> None:
    request, expected = MISTAKES[mistake]
    channel, stub = main.stub()
    with channel, pytest.raises(grpc.RpcError) as raised:
        stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
    assert raised.value.code() == expected, raised.value.details()
    assert raised.value.details()  # says what is wrong


def whole(rows: np.ndarray) -> np.ndarray:
    """Rows rounded to whole numbers, as integers."""
    return np.round(rows).astype(np.int64)


TYPED = {
    "BOOL": ("bool_contents", lambda rows: rows > 4.0),
    "INT8": ("int_contents", whole),
    "INT16": ("int_contents", whole),
    "INT32": ("int_contents", whole),
    "INT64": ("int64_contents", whole),
    "UINT8": ("uint_contents", whole),
    "UINT16": ("uint_contents", whole),
    "UINT32": ("uint_contents", whole),
    "UINT64": ("uint64_contents", whole),
    "FP32": ("fp32_contents", lambda rows: rows.astype(np.float32)),
    "FP64": ("fp64_contents", lambda rows: rows),
    "BYTES": ("bytes_contents", lambda rows: rows.astype(str)),
}
"""Each datatype's typed field, and iris rows as that datatype carries them."""


@pytest.mark.parametrize("datatype", list(TYPED))
def test_typed_contents_of_every_datatype(
    main: GrpcServer, serving_project: ServingProject, datatype: str
) -> None:
    field_name, shaped = TYPED[datatype]
    sent = shaped(rows_of(5, seed=3))
    values = [v.encode() for v in sent.reshape(-1)] if datatype == "BYTES" else sent.reshape(-1)
    request = pb.ModelInferRequest(model_name=IRIS, id=f"typed-{datatype}")
    tensor_entry = request.inputs.add(name="input-0", datatype=datatype, shape=sent.shape)
    getattr(tensor_entry.contents, field_name).extend(
        values.tolist() if datatype != "BYTES" else values
    )
    channel, stub = main.stub()
    with channel:
        response = stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
    assert not response.raw_output_contents  # typed in, typed out
    predict = next(o for o in response.outputs if o.name == "predict")
    expected = serving_project.predict(IRIS, np.asarray(sent, dtype=np.float64))
    assert [v.decode() for v in predict.contents.bytes_contents] == expected.tolist()


def test_typed_value_out_of_its_range_is_invalid(main: GrpcServer) -> None:
    request = pb.ModelInferRequest(model_name=IRIS)
    entry = request.inputs.add(name="input-0", datatype="INT8", shape=[1, 4])
    entry.contents.int_contents.extend([1, 2, 300, 4])
    channel, stub = main.stub()
    with channel, pytest.raises(grpc.RpcError) as raised:
        stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "out of range for INT8" in raised.value.details()


def test_typed_contents_mistakes_name_the_field(main: GrpcServer) -> None:
    request = pb.ModelInferRequest(model_name=IRIS)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp32_contents.extend(
        [1.0, 2.0, 3.0, 4.0]
    )
    channel, stub = main.stub()
    with channel, pytest.raises(grpc.RpcError) as raised:
        stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fp64_contents" in raised.value.details()


def test_oversized_message_is_resource_exhausted(main: GrpcServer) -> None:
    rows = np.zeros((350_000, 4))  # 11.2 MB, past the default 10 MB limit
    request = infer_request(inputs=[tensor(shape=rows.shape)], raw=[rows.tobytes()])
    channel, stub = main.stub()
    with channel, pytest.raises(grpc.RpcError) as raised:
        stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unavailable_while_a_model_is_not_ready(servers: dict[str, GrpcServer]) -> None:
    tampered = servers["tampered"]
    client = tampered.triton()
    try:
        assert not client.is_server_ready()
        assert client.is_model_ready("good")
        assert not client.is_model_ready("tampered")
        with pytest.raises(InferenceServerException) as raised:
            client.infer("tampered", [triton_input("input-0", rows_of(1), "FP64")])
    finally:
        client.close()
    assert raised.value.status() == "StatusCode.UNAVAILABLE"
    assert "failed" in raised.value.message()
    with grpc.insecure_channel(tampered.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {
            service: health.Check(health_pb2.HealthCheckRequest(service=service)).status
            for service in ("", "good", "tampered")
        }
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    serving = health_pb2.HealthCheckResponse.SERVING
    assert statuses == {"": not_serving, "good": serving, "tampered": not_serving}


def test_full_queue_is_unavailable_and_an_expired_request_deadline_exceeded(
    servers: dict[str, GrpcServer],
) -> None:
    tight = servers["tight"]
    rows = rows_of(1000)
    request = infer_request(inputs=[tensor(shape=rows.shape)], raw=[rows.tobytes()])

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(tight.target) as channel:
            stub = InferenceStub(channel)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as error:
                    return error.code()
                return grpc.StatusCode.OK

            return await asyncio.gather(*(one() for _ in range(64)))

    seen: set[grpc.StatusCode] = set()
    for _round in range(20):
        seen.update(asyncio.run(burst()))
        if {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED} <= seen:
            break
    assert seen <= {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
    assert {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED} <= seen


# -- auth and the repository ----------------------------------------------------------------------


def test_api_key_in_call_metadata(servers: dict[str, GrpcServer]) -> None:
    keyed = servers["keyed"]
    request = infer_request()
    channel, stub = keyed.stub()
    with channel:

        def call(*metadata: tuple[str, str]) -> grpc.StatusCode:
            return code_of(
                lambda: stub.call("ModelInfer")(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            )

        assert call() == grpc.StatusCode.UNAUTHENTICATED
        assert call(("authorization", "Bearer wrong")) == grpc.StatusCode.PERMISSION_DENIED
        assert call(("authorization", f"Bearer {INFERENCE_KEY}")) == grpc.StatusCode.OK
        assert call(("x-api-key", INFERENCE_KEY)) == grpc.StatusCode.OK
        assert (
            code_of(lambda: stub.call("ServerLive")(pb.ServerLiveRequest())) == grpc.StatusCode.OK
        )
        metadata_call = lambda: stub.call("ServerMetadata")(pb.ServerMetadataRequest())  # noqa: E731
        assert code_of(metadata_call) == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert check.status == health_pb2.HealthCheckResponse.SERVING  # health stays open


def test_repository_calls_take_the_admin_key(servers: dict[str, GrpcServer]) -> None:
    keyed = servers["keyed"]
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    client = keyed.triton()
    try:
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_repository_index(headers={"authorization": f"Bearer {INFERENCE_KEY}"})
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
        index = client.get_model_repository_index(headers=admin)
        assert {(m.name, m.state) for m in index.models} >= {(IRIS, "READY"), (PRICE, "READY")}

        client.unload_model(PRICE, headers=admin)
        states = {
            (m.name, m.state, m.reason)
            for m in client.get_model_repository_index(headers=admin).models
        }
        assert any(
            name == PRICE and state == "UNAVAILABLE" and reason == "unloaded"
            for name, state, reason in states
        )
        inference = {"authorization": f"Bearer {INFERENCE_KEY}"}
        with pytest.raises(InferenceServerException) as gone:
            client.infer(
                PRICE, [triton_input("input-0", rows_of(1)[:, :2], "FP64")], headers=inference
            )
        assert gone.value.status() == "StatusCode.NOT_FOUND"

        client.load_model(PRICE, headers=admin)
        assert client.is_model_ready(PRICE, headers=inference)
        with pytest.raises(InferenceServerException) as bad:
            client.load_model(PRICE, headers=admin, config='{"backend": "onnx"}')
        assert bad.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        client.close()


# -- monitoring -----------------------------------------------------------------------------------


def metric_value(server: GrpcServer, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    text = httpx.get(f"{server.live.url}/metrics", timeout=CALL_TIMEOUT_S).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        found = dict(part.split("=", 1) for part in label_text.split(",") if "=" in part)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total


def test_grpc_calls_are_counted_with_protocol_grpc(main: GrpcServer) -> None:
    labels = {"model": IRIS, "protocol": "grpc"}
    before_ok = metric_value(main, "mlserve_requests_total", status="200", **labels)
    before_bad = metric_value(main, "mlserve_request_errors_total", status="400", **labels)
    channel, stub = main.stub()
    with channel:
        stub.call("ModelInfer")(infer_request(), timeout=CALL_TIMEOUT_S)
        code_of(
            lambda: stub.call("ModelInfer")(
                infer_request(inputs=[tensor(shape=(1, 3))]), timeout=CALL_TIMEOUT_S
            )
        )
    assert metric_value(main, "mlserve_requests_total", status="200", **labels) == before_ok + 1
    assert (
        metric_value(main, "mlserve_request_errors_total", status="400", **labels) == before_bad + 1
    )
    assert metric_value(main, "mlserve_request_duration_seconds_count", **labels) >= 2


def logged(server: GrpcServer, model: str, request_ids: set[str]) -> dict[str, list[Any]]:
    """The predictions logged under ``request_ids``, waiting for the writer to write them."""
    deadline = time.monotonic() + WAIT_LOG_S
    while True:
        store = PredictionLogStore(server.log_url)
        try:
            records = store.read_records(model)
        finally:
            store.close()
        found: dict[str, list[Any]] = {}
        for record in records:
            if record.request_id in request_ids:
                found.setdefault(record.request_id, []).append(record.prediction)
        if set(found) == request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_predictions_are_logged_under_the_request_id(
    main: GrpcServer, serving_project: ServingProject
) -> None:
    rows = rows_of(3, seed=7)
    channel, stub = main.stub()
    with channel:
        named = stub.call("ModelInfer")(
            infer_request(id="logged-by-id", inputs=[tensor(shape=(3, 4))], raw=[rows.tobytes()]),
            timeout=CALL_TIMEOUT_S,
        )
        generated = stub.call("ModelInfer")(infer_request(), timeout=CALL_TIMEOUT_S)
    assert named.id == "logged-by-id"
    assert generated.id  # a fresh one, returned to the client
    found = logged(main, IRIS, {"logged-by-id", generated.id})
    assert found["logged-by-id"] == serving_project.predict(IRIS, rows).tolist()
    assert len(found[generated.id]) == 1


def test_cache_answers_repeated_tensors_under_each_request_id(
    main: GrpcServer, serving_project: ServingProject, price_rows: pd.DataFrame
) -> None:
    array = price_rows.to_numpy()[:5]
    hits_before = metric_value(main, "mlserve_cache_hits_total", model=PRICE)
    request = pb.ModelInferRequest(model_name=PRICE)
    request.inputs.add(name="input-0", datatype="FP64", shape=array.shape)
    request.raw_input_contents.append(array.tobytes())
    answers = []
    channel, stub = main.stub()
    with channel:
        for request_id in ("cached-1", "cached-2"):
            request.id = request_id
            answers.append(stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S))
    assert [a.id for a in answers] == ["cached-1", "cached-2"]
    assert answers[0].raw_output_contents == answers[1].raw_output_contents
    predicted = np.frombuffer(answers[1].raw_output_contents[0], dtype="<f8")
    np.testing.assert_allclose(predicted, serving_project.predict(PRICE, array), rtol=1e-12)
    assert metric_value(main, "mlserve_cache_hits_total", model=PRICE) == hits_before + 1
    assert set(logged(main, PRICE, {"cached-1", "cached-2"})) == {"cached-1", "cached-2"}


# -- start and shutdown ---------------------------------------------------------------------------


def test_worker_processes_share_the_grpc_port(
    serving_project: ServingProject, tmp_path: Path
) -> None:
    server = start(serving_project.root, IRIS, "--workers", "2", logs=tmp_path)
    try:
        wait_for_every_worker(server.live)
        assert (
            len([r for r in server.live.log_records() if r.get("message") == "grpc listening"]) == 2
        )
        rows = rows_of(3, seed=5)
        request = infer_request(inputs=[tensor(shape=rows.shape)], raw=[rows.tobytes()])
        for _call in range(20):  # a fresh connection each: either worker may take it
            channel, stub = server.stub()
            with channel:
                response = stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
            predicted = [v.decode() for v in bytes_elements(response.raw_output_contents[0])]
            assert predicted == serving_project.predict(IRIS, rows).tolist()
        assert server.live.stop() == 0
    finally:
        shutdown(server.live)


def test_a_taken_grpc_port_stops_the_start(serving_project: ServingProject, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        live = launch(serving_project.root, IRIS, "--grpc-port", str(port), log_dir=tmp_path)
        try:
            exit_code = live.process.wait(START_TIMEOUT_S)
        finally:
            shutdown(live)
    assert exit_code != 0
    assert f"cannot listen for gRPC on 127.0.0.1:{port}: Address already in use" in live.stderr()
    assert "Traceback" not in live.stderr()  # one line, as for a typo


@dataclass
class Outcome:
    """One call of the load: what it sent and how it ended."""

    request_id: str
    rows: int
    code: grpc.StatusCode | None = None
    details: str = ""
    correct: bool = False


@dataclass
class Load:
    """Calls sent while the server shuts down, and what a health Watch saw."""

    outcomes: list[Outcome] = field(default_factory=list)
    health: list[int] = field(default_factory=list)


LOAD_DEADLINE_S = 60.0
DRAIN_CHANNELS = 8
REFUSALS = ("the server is shutting down", "failed to connect", "Connection refused")
"""How a call the server did not take ends: refused by us while draining, or no connection."""


def test_sigterm_under_grpc_load_answers_every_accepted_call(
    serving_project: ServingProject, tmp_path: Path
) -> None:
    expected = {
        count: serving_project.predict(IRIS, rows_of(count, seed=count)).tolist()
        for count in range(1, 200)
    }
    server = start(serving_project.root, IRIS, env={"MLSERVE_DRAIN_TIMEOUT_S": "10"}, logs=tmp_path)
    load = Load()
    try:
        server.live.wait_ready()

        async def run() -> None:
            signalled = asyncio.Event()
            sending = asyncio.create_task(load_until_refused(server, load, signalled, expected))
            deadline = time.monotonic() + 30
            while sum(o.code == grpc.StatusCode.OK for o in load.outcomes) < 100:
                assert time.monotonic() < deadline, "the load never got going"
                assert not sending.done(), sending
                await asyncio.sleep(0.02)
            server.live.process.send_signal(signal.SIGTERM)
            signalled.set()
            await asyncio.wait_for(sending, LOAD_DEADLINE_S)

        asyncio.run(run())
        exit_code = server.live.process.wait(30)
    finally:
        shutdown(server.live)

    assert exit_code == 0, server.live.stderr()[-3000:]
    assert all(o.code is not None for o in load.outcomes)
    answered = [o for o in load.outcomes if o.code == grpc.StatusCode.OK]
    assert len(answered) >= 100
    assert all(o.correct for o in answered)
    refused = [o for o in load.outcomes if o.code != grpc.StatusCode.OK]
    assert refused, "the load stopped before the server refused a call"
    assert all(
        o.code == grpc.StatusCode.UNAVAILABLE and any(r in o.details for r in REFUSALS)
        for o in refused
    ), [(o.code, o.details) for o in refused]
    serving = health_pb2.HealthCheckResponse.SERVING
    assert load.health[:1] == [serving]
    assert health_pb2.HealthCheckResponse.NOT_SERVING in load.health


async def load_until_refused(
    server: GrpcServer, load: Load, signalled: asyncio.Event, expected: dict[int, list[Any]]
) -> None:
    """Calls on several channels, each until the server refuses one after the signal, and a
    health Watch until the server ends it."""

    async def send(seed: int) -> None:
        rng = np.random.default_rng(seed)
        deadline = time.monotonic() + LOAD_DEADLINE_S
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = InferenceStub(channel)
            while time.monotonic() < deadline:
                count = int(rng.integers(1, 200))
                rows = rows_of(count, seed=count)
                outcome = Outcome(uuid.uuid4().hex, count)
                load.outcomes.append(outcome)
                request = infer_request(
                    id=outcome.request_id, inputs=[tensor(shape=rows.shape)], raw=[rows.tobytes()]
                )
                request.outputs.add(name="predict")
                try:
                    response = await stub.call("ModelInfer")(request, timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as error:
                    outcome.code, outcome.details = error.code(), error.details() or ""
                    if signalled.is_set():
                        return
                    continue
                outcome.code = grpc.StatusCode.OK
                predicted = [v.decode() for v in bytes_elements(response.raw_output_contents[0])]
                outcome.correct = response.id == outcome.request_id and predicted == expected[count]

    async def watch() -> None:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            try:
                async for message in stream:
                    load.health.append(message.status)
            except grpc.aio.AioRpcError:
                pass  # the server went away

    await asyncio.gather(watch(), *(send(i) for i in range(DRAIN_CHANNELS)))


def bytes_elements(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor (each after its 4-byte little-endian length)."""
    items, offset = [], 0
    while offset < len(raw):
        length = int.from_bytes(raw[offset : offset + 4], "little")
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items
