"""Open Inference Protocol v2 over REST against a real `mlserve serve` process."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_harness import (
    CHURN,
    IRIS,
    PRICE,
    LiveServer,
    ServingProject,
    binary_request,
    decode_binary_response,
    v2_matrix_request,
    v2_tensor,
)

NUMERIC_DATATYPES = [
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
]
NUMPY_OF: dict[str, type[np.generic]] = {
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BOOL": np.bool_,
}


def infer(server: LiveServer, model: str, body: dict[str, Any]) -> httpx.Response:
    """POST an OIP request to /v2/models/{model}/infer."""
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def outputs_of(response: httpx.Response) -> dict[str, Any]:
    """Output name -> data of a JSON OIP response."""
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


# -- server and model metadata ------------------------------------------------------------------


def test_server_metadata_names_the_binary_extension(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "mlserve"
    assert body["version"]
    assert "binary_tensor_data" in body["extensions"]


def test_live_and_ready(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{live_server.url}/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_no_reference_serves_every_production_alias(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    models = httpx.get(f"{live_server.url}/v1/models").json()["models"]
    served = {(m["name"], m["version"]) for m in models}
    assert served == set(serving_project.versions.items())
    assert all(m["ready"] and m["state"] == "ready" for m in models)


def test_numeric_model_metadata_describes_the_2d_input(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    response = httpx.get(f"{live_server.url}/v2/models/{IRIS}")
    assert response.status_code == 200
    meta = response.json()
    assert meta["name"] == IRIS
    assert meta["versions"] == [serving_project.versions[IRIS]]
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"]
    assert meta["outputs"][0]["datatype"] == "BYTES"
    assert meta["outputs"][1]["shape"] == [-1, 3]
    parameters = meta["parameters"]
    assert parameters["state"] == "ready"
    assert parameters["classes"] == ["setosa", "versicolor", "virginica"]
    assert [f["name"] for f in parameters["features"]] == serving_project.signatures[IRIS]


def test_categorical_model_metadata_lists_one_tensor_per_feature(live_server: LiveServer) -> None:
    meta = httpx.get(f"{live_server.url}/v2/models/{CHURN}").json()
    inputs = {i["name"]: i for i in meta["inputs"]}
    assert list(inputs) == ["plan", "region", "monthly", "tenure"]
    assert inputs["plan"]["datatype"] == "BYTES"
    assert inputs["plan"]["parameters"]["categories"] == ["basic", "pro", "team"]
    assert inputs["monthly"]["datatype"] == "FP64"


def test_regressor_metadata_has_only_predict(live_server: LiveServer) -> None:
    meta = httpx.get(f"{live_server.url}/v2/models/{PRICE}").json()
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert meta["parameters"]["task"] == "regression"


def test_version_metadata_and_readiness(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    version = serving_project.versions[IRIS]
    meta = httpx.get(f"{live_server.url}/v2/models/{IRIS}/versions/{version}")
    assert meta.status_code == 200
    assert meta.json()["parameters"]["version"] == version
    for path in (f"/v2/models/{IRIS}/ready", f"/v2/models/{IRIS}/versions/{version}/ready"):
        ready = httpx.get(f"{live_server.url}{path}")
        assert ready.status_code == 200
        assert ready.json() == {"name": IRIS, "version": version, "ready": True}


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nosuch",
        "/v2/models/nosuch/ready",
        "/v2/models/nosuch/versions/1",
        "/v2/models/iris/versions/99",
        "/v2/models/iris/versions/99/ready",
    ],
)
def test_unknown_model_or_version_metadata_is_404(live_server: LiveServer, path: str) -> None:
    response = httpx.get(f"{live_server.url}{path}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert "nosuch" in response.json()["error"] or "99" in response.json()["error"]


# -- inference: layouts, datatypes, shapes --------------------------------------------------------


def test_2d_tensor_predictions_match_the_model_in_process(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    response = infer(live_server, IRIS, v2_matrix_request(iris_rows.to_numpy()))
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == IRIS
    assert body["model_version"] == serving_project.versions[IRIS]
    assert response.headers["x-model-version"] == serving_project.versions[IRIS]
    # no output named: every output the metadata declares (the protocol's rule)
    declared = [
        o["name"] for o in httpx.get(f"{live_server.url}/v2/models/{IRIS}").json()["outputs"]
    ]
    assert [o["name"] for o in body["outputs"]] == declared == ["predict", "predict_proba"]
    output, proba = body["outputs"]
    assert output["datatype"] == "BYTES"
    assert output["shape"] == [len(iris_rows)]
    assert output["data"] == serving_project.predict(IRIS, iris_rows).tolist()
    assert proba["shape"] == [len(iris_rows), 3]
    np.testing.assert_allclose(
        np.reshape(proba["data"], proba["shape"]), serving_project.predict_proba(IRIS, iris_rows)
    )


def test_versioned_infer_url(live_server: LiveServer, serving_project: ServingProject) -> None:
    version = serving_project.versions[IRIS]
    url = f"{live_server.url}/v2/models/{IRIS}/versions/{version}/infer"
    response = httpx.post(url, json=v2_matrix_request([[5.1, 3.5, 1.4, 0.2]]))
    assert response.status_code == 200
    assert response.json()["model_version"] == version


@pytest.mark.parametrize("datatype", NUMERIC_DATATYPES)
def test_every_numeric_datatype_is_accepted_and_cast(
    live_server: LiveServer,
    serving_project: ServingProject,
    iris_rows: pd.DataFrame,
    datatype: str,
) -> None:
    values = iris_rows.to_numpy()
    if datatype.startswith(("INT", "UINT")):
        values = np.round(values)
    sent: np.ndarray = values.astype(NUMPY_OF[datatype])
    response = infer(live_server, IRIS, v2_matrix_request(sent, datatype))
    assert response.status_code == 200, response.text
    expected = serving_project.predict(IRIS, sent.astype(np.float64))
    assert outputs_of(response)["predict"] == expected.tolist()


def test_bool_tensor_is_cast_to_zero_and_one(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    rows = [[True, False, True, True], [False, False, False, False]]
    response = infer(live_server, IRIS, v2_matrix_request(rows, "BOOL"))
    assert response.status_code == 200, response.text
    expected = serving_project.predict(IRIS, np.asarray(rows, dtype=np.float64))
    assert outputs_of(response)["predict"] == expected.tolist()


def test_bytes_tensor_of_numbers_is_parsed(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    rows = iris_rows.to_numpy()[:5]
    response = infer(live_server, IRIS, v2_matrix_request(rows.astype(str), "BYTES"))
    assert response.status_code == 200, response.text
    assert outputs_of(response)["predict"] == serving_project.predict(IRIS, rows).tolist()


def test_flat_and_nested_data_give_the_same_answer(
    live_server: LiveServer, iris_rows: pd.DataFrame
) -> None:
    rows = iris_rows.to_numpy()
    flat = infer(live_server, IRIS, {"inputs": [v2_tensor("input-0", rows, "FP64", flat=True)]})
    nested = infer(live_server, IRIS, {"inputs": [v2_tensor("input-0", rows, "FP64", flat=False)]})
    assert flat.status_code == nested.status_code == 200
    assert outputs_of(flat) == outputs_of(nested)


def test_one_tensor_per_feature_for_a_numeric_model(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    datatypes = ["FP32", "FP64", "INT64", "FP16"]
    columns = {n: iris_rows[n].to_numpy() for n in iris_rows.columns}
    columns["petal_length"] = np.round(columns["petal_length"])
    inputs = [
        v2_tensor(name, values.astype(NUMPY_OF[dt]), dt)
        for (name, values), dt in zip(reversed(columns.items()), reversed(datatypes), strict=True)
    ]  # any order: matched by name
    response = infer(live_server, IRIS, {"inputs": inputs})
    assert response.status_code == 200, response.text
    sent = pd.DataFrame(
        {
            n: v.astype(NUMPY_OF[dt]).astype(np.float64)
            for (n, v), dt in zip(columns.items(), datatypes, strict=True)
        }
    )
    assert outputs_of(response)["predict"] == serving_project.predict(IRIS, sent).tolist()


def test_per_feature_tensors_may_have_shape_rows_by_one(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    inputs = [
        {"name": "x1", "datatype": "FP64", "shape": [2, 1], "data": [[0.5], [1.0]]},
        {"name": "x2", "datatype": "FP64", "shape": [2, 1], "data": [[-1.0], [2.0]]},
    ]
    response = infer(live_server, PRICE, {"inputs": inputs})
    assert response.status_code == 200, response.text
    expected = serving_project.predict(PRICE, [[0.5, -1.0], [1.0, 2.0]])
    np.testing.assert_allclose(outputs_of(response)["predict"], expected)


def test_categorical_model_takes_bytes_tensors_with_nulls(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    rows = churn_rows.assign(plan=churn_rows["plan"].fillna("basic"))
    inputs = [
        v2_tensor("plan", rows["plan"].to_numpy(dtype=str), "BYTES"),
        v2_tensor("region", rows["region"].to_numpy(dtype=str), "BYTES"),
        # JSON null in FP64 data is a missing value; monthly had nulls in training
        {
            "name": "monthly",
            "datatype": "FP64",
            "shape": [len(rows)],
            "data": [None if np.isnan(v) else v for v in rows["monthly"]],
        },
        v2_tensor("tenure", rows["tenure"].to_numpy(), "INT32"),
    ]
    response = infer(live_server, CHURN, {"inputs": inputs, "outputs": [{"name": "predict"}]})
    assert response.status_code == 200, response.text
    assert outputs_of(response)["predict"] == serving_project.predict(CHURN, rows).tolist()


def test_regressor_returns_fp64(
    live_server: LiveServer, serving_project: ServingProject, price_rows: pd.DataFrame
) -> None:
    response = infer(live_server, PRICE, v2_matrix_request(price_rows.to_numpy(), "FP32"))
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["datatype"] == "FP64"
    sent = price_rows.to_numpy().astype(np.float32).astype(np.float64)
    expected = serving_project.predict(PRICE, sent)
    np.testing.assert_allclose(output["data"], expected, rtol=1e-9)


# -- id, parameters, outputs ------------------------------------------------------------------------


def test_id_is_echoed_and_parameters_are_accepted(live_server: LiveServer) -> None:
    body = v2_matrix_request(
        [[5.1, 3.5, 1.4, 0.2]], id="req-42", parameters={"priority": 3, "tag": "x"}
    )
    response = infer(live_server, IRIS, body)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "req-42"


def test_no_id_means_no_id_in_the_response(live_server: LiveServer) -> None:
    response = infer(live_server, IRIS, v2_matrix_request([[5.1, 3.5, 1.4, 0.2]]))
    assert "id" not in response.json()


@pytest.mark.parametrize(
    "names", [["predict_proba"], ["predict", "predict_proba"], ["predict_proba", "predict"]]
)
def test_outputs_selection(
    live_server: LiveServer,
    serving_project: ServingProject,
    iris_rows: pd.DataFrame,
    names: list[str],
) -> None:
    body = v2_matrix_request(iris_rows.to_numpy(), outputs=[{"name": n} for n in names])
    response = infer(live_server, IRIS, body)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [o["name"] for o in outputs] == names
    by_name = {o["name"]: o for o in outputs}
    proba = by_name["predict_proba"]
    assert proba["datatype"] == "FP64"
    assert proba["shape"] == [len(iris_rows), 3]
    np.testing.assert_allclose(
        np.asarray(proba["data"]).reshape(proba["shape"]),
        serving_project.predict_proba(IRIS, iris_rows),
        rtol=1e-9,
    )


# -- Triton's binary tensor data extension ---------------------------------------------------------


def test_binary_input_and_binary_outputs(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    rows = iris_rows.to_numpy(dtype=np.float32)
    content, headers = binary_request(
        [("input-0", rows, "FP32")],
        outputs=[{"name": "predict"}, {"name": "predict_proba"}],
        parameters={"binary_data_output": True},
    )
    response = httpx.post(
        f"{live_server.url}/v2/models/{IRIS}/infer", content=content, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert int(response.headers["inference-header-content-length"]) < len(response.content)
    outputs = decode_binary_response(response)
    expected = serving_project.predict(IRIS, rows.astype(np.float64))
    assert outputs["predict"].tolist() == expected.tolist()
    np.testing.assert_allclose(
        outputs["predict_proba"], serving_project.predict_proba(IRIS, rows.astype(np.float64))
    )


def test_binary_flag_per_output_overrides_the_request_default(
    live_server: LiveServer, iris_rows: pd.DataFrame
) -> None:
    body = v2_matrix_request(
        iris_rows.to_numpy()[:3],
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "predict", "parameters": {"binary_data": False}},
            {"name": "predict_proba"},
        ],
    )
    response = infer(live_server, IRIS, body)
    assert response.status_code == 200
    length = int(response.headers["inference-header-content-length"])
    header = httpx.Response(200, content=response.content[:length]).json()
    predict, proba = header["outputs"]
    assert "data" in predict
    assert "data" not in proba
    assert proba["parameters"]["binary_data_size"] == 3 * 3 * 8
    assert len(response.content) == length + 3 * 3 * 8


def test_json_input_with_one_binary_output(live_server: LiveServer) -> None:
    body = v2_matrix_request(
        [[5.1, 3.5, 1.4, 0.2]], outputs=[{"name": "predict", "parameters": {"binary_data": True}}]
    )
    response = infer(live_server, IRIS, body)
    assert response.status_code == 200
    assert decode_binary_response(response)["predict"].tolist() == ["setosa"]


def test_binary_bytes_tensors_for_categorical_features(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    rows = churn_rows.assign(plan=churn_rows["plan"].fillna("team"))
    content, headers = binary_request(
        [
            ("plan", rows["plan"].to_numpy(dtype=object), "BYTES"),
            ("region", rows["region"].to_numpy(dtype=object), "BYTES"),
            ("monthly", rows["monthly"].to_numpy(dtype="<f8"), "FP64"),  # NaN: nullable feature
            ("tenure", rows["tenure"].to_numpy(dtype="<i8"), "INT64"),
        ]
    )
    response = httpx.post(
        f"{live_server.url}/v2/models/{CHURN}/infer", content=content, headers=headers
    )
    assert response.status_code == 200, response.text
    assert outputs_of(response)["predict"] == serving_project.predict(CHURN, rows).tolist()


# -- request sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 10_000])
def test_one_to_ten_thousand_rows_json(
    live_server: LiveServer, serving_project: ServingProject, rows: int
) -> None:
    values = np.random.default_rng(rows).uniform(0.1, 8.0, size=(rows, 4)).round(3)
    response = infer(live_server, IRIS, v2_matrix_request(values))
    assert response.status_code == 200, response.text
    assert outputs_of(response)["predict"] == serving_project.predict(IRIS, values).tolist()


def test_ten_thousand_rows_binary(live_server: LiveServer, serving_project: ServingProject) -> None:
    values = np.random.default_rng(7).uniform(0.1, 8.0, size=(10_000, 4)).astype(np.float32)
    content, headers = binary_request(
        [("input-0", values, "FP32")], parameters={"binary_data_output": True}
    )
    response = httpx.post(
        f"{live_server.url}/v2/models/{IRIS}/infer", content=content, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    predicted = decode_binary_response(response)["predict"]
    assert predicted.tolist() == serving_project.predict(IRIS, values.astype(np.float64)).tolist()


# -- property: any datatype, shape and encoding decodes to the same rows ----------------------------


@st.composite
def encoded_matrices(draw: st.DrawFn) -> tuple[str, np.ndarray, bool, bool]:
    """A datatype, a matrix of iris-sized rows valid for it, and whether to send binary / flat."""
    datatype = draw(st.sampled_from([*NUMERIC_DATATYPES, "BOOL", "BYTES"]))
    rows = draw(st.integers(min_value=1, max_value=40))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    if datatype == "BOOL":
        values: np.ndarray = rng.integers(0, 2, size=(rows, 4)).astype(np.bool_)
    elif datatype.startswith(("INT", "UINT")):
        values = rng.integers(0, 9, size=(rows, 4)).astype(NUMPY_OF[datatype])
    elif datatype == "BYTES":
        values = rng.uniform(0, 8, size=(rows, 4)).round(4)
    else:
        values = rng.uniform(0, 8, size=(rows, 4)).astype(NUMPY_OF[datatype])
    binary = draw(st.booleans()) and datatype != "BOOL"  # BOOL binary packing is tested by triton
    return datatype, values, binary, draw(st.booleans())


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=encoded_matrices())
def test_any_encoding_of_a_matrix_predicts_like_the_model(
    live_server: LiveServer,
    serving_project: ServingProject,
    case: tuple[str, np.ndarray, bool, bool],
) -> None:
    datatype, values, binary, flat = case
    expected = serving_project.predict(
        IRIS, values.astype(np.float64) if datatype != "BYTES" else values
    )
    url = f"{live_server.url}/v2/models/{IRIS}/infer"
    if binary:
        sent = values.astype(str).astype(object) if datatype == "BYTES" else values
        content, headers = binary_request([("input-0", sent, datatype)])
        response = httpx.post(url, content=content, headers=headers, timeout=30)
    else:
        sent = values.astype(str) if datatype == "BYTES" else values
        body = {"inputs": [v2_tensor("input-0", sent, datatype, flat=flat)]}
        response = httpx.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert outputs_of(response)["predict"] == expected.tolist()
