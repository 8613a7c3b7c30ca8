"""NVIDIA's tritonclient and KServe's Python client work against the server unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from serving_harness import CHURN, IRIS, PRICE, LiveServer, ServingProject
from tritonclient.utils import InferenceServerException


@pytest.fixture
def triton_client(live_server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    """A tritonclient HTTP client of the shared server."""
    client = triton.InferenceServerClient(
        url=f"127.0.0.1:{live_server.port}", connection_timeout=30, network_timeout=30
    )
    yield client
    client.close()


def triton_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    """A tritonclient input holding ``array``."""
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# -- tritonclient ---------------------------------------------------------------------------------


def test_triton_health_and_metadata(
    triton_client: triton.InferenceServerClient, serving_project: ServingProject
) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(IRIS)
    assert triton_client.is_model_ready(IRIS, model_version=serving_project.versions[IRIS])
    assert not triton_client.is_model_ready("nosuch")
    assert triton_client.get_server_metadata()["name"] == "mlserve"
    meta = triton_client.get_model_metadata(IRIS)
    assert meta["inputs"][0]["name"] == "input-0"
    assert {o["name"] for o in meta["outputs"]} == {"predict", "predict_proba"}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "UINT8", "FP16"])
def test_triton_infer_2d_tensor(
    triton_client: triton.InferenceServerClient,
    serving_project: ServingProject,
    iris_rows: pd.DataFrame,
    datatype: str,
    binary: bool,
) -> None:
    dtype = triton.triton_to_np_dtype(datatype)
    values = iris_rows.to_numpy()
    if np.issubdtype(dtype, np.integer):
        values = np.round(values)
    array = values.astype(dtype)
    result = triton_client.infer(
        IRIS,
        [triton_input("input-0", array, datatype, binary)],
        outputs=[
            triton.InferRequestedOutput("predict", binary_data=binary),
            triton.InferRequestedOutput("predict_proba", binary_data=binary),
        ],
        request_id="triton-1",
    )
    response = result.get_response()
    assert response["id"] == "triton-1"
    assert response["model_version"] == serving_project.versions[IRIS]
    predicted = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    expected = serving_project.predict(IRIS, array.astype(np.float64))
    assert predicted == expected.tolist()
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (len(iris_rows), 3)
    np.testing.assert_allclose(
        proba, serving_project.predict_proba(IRIS, array.astype(np.float64)), rtol=1e-9
    )


def test_triton_bool_tensor(
    triton_client: triton.InferenceServerClient, serving_project: ServingProject
) -> None:
    array = np.array([[True, False, True, False], [True, True, True, True]])
    result = triton_client.infer(IRIS, [triton_input("input-0", array, "BOOL", binary=True)])
    predicted = [v.decode() for v in result.as_numpy("predict")]
    assert predicted == serving_project.predict(IRIS, array.astype(np.float64)).tolist()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_per_feature_bytes_tensors(
    triton_client: triton.InferenceServerClient,
    serving_project: ServingProject,
    churn_rows: pd.DataFrame,
    binary: bool,
) -> None:
    rows = churn_rows.assign(
        plan=churn_rows["plan"].fillna("pro"), monthly=churn_rows["monthly"].fillna(42.0)
    )
    inputs = [
        triton_input("plan", rows["plan"].to_numpy(dtype=object), "BYTES", binary),
        triton_input("region", rows["region"].to_numpy(dtype=object), "BYTES", binary),
        triton_input("monthly", rows["monthly"].to_numpy(dtype=np.float32), "FP32", binary),
        triton_input("tenure", rows["tenure"].to_numpy(dtype=np.int32), "INT32", binary),
    ]
    result = triton_client.infer(
        CHURN, inputs, outputs=[triton.InferRequestedOutput("predict", binary_data=binary)]
    )
    predicted = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("predict")]
    sent = rows.assign(monthly=rows["monthly"].astype(np.float32).astype(np.float64))
    assert predicted == serving_project.predict(CHURN, sent).tolist()


def test_triton_regressor_binary_output(
    triton_client: triton.InferenceServerClient,
    serving_project: ServingProject,
    price_rows: pd.DataFrame,
) -> None:
    array = price_rows.to_numpy()
    result = triton_client.infer(
        PRICE,
        [triton_input("input-0", array, "FP64", binary=True)],
        outputs=[triton.InferRequestedOutput("predict", binary_data=True)],
    )
    np.testing.assert_allclose(
        result.as_numpy("predict"), serving_project.predict(PRICE, array), rtol=1e-12
    )


def test_triton_versioned_infer(
    triton_client: triton.InferenceServerClient, serving_project: ServingProject
) -> None:
    array = np.array([[6.3, 3.3, 6.0, 2.5]])
    version = serving_project.versions[IRIS]
    result = triton_client.infer(
        IRIS, [triton_input("input-0", array, "FP64", True)], model_version=version
    )
    assert result.get_response()["model_version"] == version


def test_triton_errors_carry_the_status_and_message(
    triton_client: triton.InferenceServerClient,
) -> None:
    array = np.zeros((2, 3))
    with pytest.raises(InferenceServerException) as bad_shape:
        triton_client.infer(IRIS, [triton_input("input-0", array, "FP64", True)])
    assert bad_shape.value.status() == "400"
    assert "expected shape [rows, 4]" in bad_shape.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.infer("nosuch", [triton_input("input-0", array, "FP64", True)])
    assert unknown.value.status() == "404"


# -- KServe's client --------------------------------------------------------------------------------


async def _kserve_v2(url: str, request: InferRequest, model: str) -> tuple[bool, bool, Any]:
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30, retries=1)) as client:
        ready = await client.is_server_ready(url)
        model_ready = await client.is_model_ready(url, model)
        response = await client.infer(url, request, model_name=model)
        return ready, model_ready, response


def test_kserve_v2_json_request(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    values = iris_rows.to_numpy()
    request = InferRequest(
        IRIS,
        infer_inputs=[InferInput("input-0", list(values.shape), "FP64", values.tolist())],
        request_id="kserve-json",
        request_outputs=[RequestedOutput("predict"), RequestedOutput("predict_proba")],
    )
    ready, model_ready, response = asyncio.run(_kserve_v2(live_server.url, request, IRIS))
    assert ready
    assert model_ready
    assert response.id == "kserve-json"
    outputs = {o.name: o for o in response.outputs}
    predicted = outputs["predict"].as_numpy()
    assert [str(v) for v in predicted.tolist()] == serving_project.predict(IRIS, values).tolist()
    np.testing.assert_allclose(
        outputs["predict_proba"].as_numpy().reshape(-1, 3),
        serving_project.predict_proba(IRIS, values),
        rtol=1e-9,
    )


def test_kserve_v2_binary_request_and_output(
    live_server: LiveServer, serving_project: ServingProject, price_rows: pd.DataFrame
) -> None:
    values = price_rows.to_numpy(dtype=np.float32)
    tensor = InferInput("input-0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values, binary_data=True)
    request = InferRequest(
        PRICE,
        infer_inputs=[tensor],
        request_outputs=[RequestedOutput("predict", parameters={"binary_data": True})],
    )
    _, _, response = asyncio.run(_kserve_v2(live_server.url, request, PRICE))
    [output] = response.outputs
    assert output.datatype == "FP64"
    np.testing.assert_allclose(
        output.as_numpy(), serving_project.predict(PRICE, values.astype(np.float64)), rtol=1e-12
    )


def test_kserve_v2_categorical_request(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    rows = churn_rows.assign(plan=churn_rows["plan"].fillna("team"))
    inputs = [
        InferInput("plan", [len(rows)], "BYTES", rows["plan"].tolist()),
        InferInput("region", [len(rows)], "BYTES", rows["region"].tolist()),
        InferInput("monthly", [len(rows)], "FP64", rows["monthly"].fillna(10.0).tolist()),
        InferInput("tenure", [len(rows)], "INT64", rows["tenure"].tolist()),
    ]
    _, _, response = asyncio.run(_kserve_v2(live_server.url, InferRequest(CHURN, inputs), CHURN))
    predicted = [str(v) for v in response.outputs[0].as_numpy().tolist()]
    sent = rows.assign(monthly=rows["monthly"].fillna(10.0))
    assert predicted == serving_project.predict(CHURN, sent).tolist()


def test_kserve_v1_client_uses_the_simple_json_api(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    values = iris_rows.to_numpy()[:5]

    async def call() -> Any:
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=30)) as client:
            return await client.infer(
                live_server.url, {"instances": values.tolist()}, model_name=IRIS
            )

    response = asyncio.run(call())
    assert isinstance(response, dict)
    assert response["predictions"] == serving_project.predict(IRIS, values).tolist()


def test_kserve_v1_client_liveness_readiness_and_inputs(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    values = iris_rows.to_numpy()[:7]

    async def call() -> tuple[bool, bool, Any]:
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=30)) as client:
            live = await client.is_server_live(live_server.url)
            ready = await client.is_model_ready(live_server.url, IRIS)
            answer = await client.infer(
                live_server.url, {"inputs": values.tolist()}, model_name=IRIS
            )
            return live, ready, answer

    live, ready, response = asyncio.run(call())
    assert (live, ready) == (True, True)
    assert response["predictions"] == serving_project.predict(IRIS, values).tolist()


def test_kserve_client_surfaces_the_error_message(live_server: LiveServer) -> None:
    request = InferRequest(IRIS, [InferInput("input-0", [1, 3], "FP64", [1.0, 2.0, 3.0])])

    async def call() -> None:
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
            await client.infer(live_server.url, request, model_name=IRIS)

    with pytest.raises(Exception, match=r"expected shape \[rows, 4\].*400"):
        asyncio.run(call())
