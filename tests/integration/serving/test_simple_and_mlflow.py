"""The simple JSON API (/v1) and MLflow-compatible scoring (/invocations, /ping)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_harness import CHURN, IRIS, PRICE, LiveServer, ServingProject

import mlserve


def records(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as JSON records, with missing values as null."""
    return [
        {str(k): (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]


def predict(server: LiveServer, model: str, body: object) -> httpx.Response:
    """POST /v1/models/{model}:predict."""
    return httpx.post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30)


# -- /v1 --------------------------------------------------------------------------------------------


def test_list_and_describe_models(live_server: LiveServer, serving_project: ServingProject) -> None:
    listed = httpx.get(f"{live_server.url}/v1/models").json()["models"]
    assert {m["name"] for m in listed} == {IRIS, CHURN, PRICE}
    assert all(m["framework"] == "sklearn" and m["load_s"] >= 0 for m in listed)
    described = httpx.get(f"{live_server.url}/v1/models/{CHURN}").json()
    assert described["version"] == serving_project.versions[CHURN]
    signature = described["signature"]
    assert [f["name"] for f in signature["inputs"]] == serving_project.signatures[CHURN]
    assert signature["classes"] == ["no", "yes"]
    assert httpx.get(f"{live_server.url}/v1/models/nosuch").status_code == 404


def test_instances_as_lists(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    response = predict(live_server, IRIS, {"instances": iris_rows.to_numpy().tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == serving_project.predict(IRIS, iris_rows).tolist()
    assert body["model_name"] == IRIS
    assert body["model_version"] == serving_project.versions[IRIS]
    assert response.headers["x-model-version"] == serving_project.versions[IRIS]
    assert "probabilities" not in body


def test_kserve_v1_inputs_answer_as_instances_do_and_both_at_once_is_a_400(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    rows = iris_rows.to_numpy().tolist()
    by_inputs = predict(live_server, IRIS, {"inputs": rows})
    assert by_inputs.status_code == 200, by_inputs.text
    assert by_inputs.json()["predictions"] == serving_project.predict(IRIS, iris_rows).tolist()
    both = predict(live_server, IRIS, {"inputs": rows, "instances": rows})
    assert both.status_code == 400
    assert "not both" in both.json()["error"]
    assert predict(live_server, IRIS, {"rows": rows}).status_code == 400


def test_root_answers_kserve_liveness(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})


def test_single_flat_row(live_server: LiveServer, serving_project: ServingProject) -> None:
    response = predict(live_server, PRICE, {"instances": [1.0, 2.0]})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], serving_project.predict(PRICE, [[1.0, 2.0]])
    )


def test_records_by_feature_name_with_raw_categorical_values(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    shuffled = [dict(reversed(r.items())) for r in records(churn_rows)]  # key order is irrelevant
    response = predict(live_server, CHURN, {"instances": shuffled})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == serving_project.predict(CHURN, churn_rows).tolist()


def test_unseen_category_is_rejected_by_default_naming_it(live_server: LiveServer) -> None:
    row = {"plan": "enterprise", "region": "eu", "monthly": 80.0, "tenure": 2}
    response = predict(live_server, CHURN, {"instances": [row]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == (
        "row 0: feature 'plan' has an unknown category: 'enterprise' (known: basic, pro, team)"
    )


@pytest.mark.parametrize(
    "body",
    [{"probabilities": True}, {"parameters": {"probabilities": True}}],
    ids=["top-level", "parameters"],
)
def test_probabilities_on_request(
    live_server: LiveServer,
    serving_project: ServingProject,
    churn_rows: pd.DataFrame,
    body: dict[str, object],
) -> None:
    response = predict(live_server, CHURN, {"instances": records(churn_rows), **body})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["classes"] == ["no", "yes"]
    np.testing.assert_allclose(
        answer["probabilities"], serving_project.predict_proba(CHURN, churn_rows), rtol=1e-9
    )


def test_versioned_predict(live_server: LiveServer, serving_project: ServingProject) -> None:
    version = serving_project.versions[IRIS]
    url = f"{live_server.url}/v1/models/{IRIS}/versions/{version}:predict"
    response = httpx.post(url, json={"instances": [[5.9, 3.0, 5.1, 1.8]]})
    assert response.status_code == 200
    assert response.json()["model_version"] == version


# -- MLflow scoring ---------------------------------------------------------------------------------


def invocations(server: LiveServer, model: str | None, **kwargs: Any) -> httpx.Response:
    """POST /invocations, naming the model in the query string when given."""
    params = {"model": model} if model else None
    return httpx.post(f"{server.url}/invocations", params=params, timeout=30, **kwargs)


def test_ping_and_health(live_server: LiveServer) -> None:
    for path in ("/ping", "/health"):
        response = httpx.get(f"{live_server.url}{path}")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


def test_dataframe_split(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    columns = list(reversed(churn_rows.columns))  # by name, in any order
    data = [[r[c] for c in columns] for r in records(churn_rows)]
    payload = {"dataframe_split": {"columns": columns, "data": data}}
    response = invocations(live_server, CHURN, json=payload)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": serving_project.predict(CHURN, churn_rows).tolist()}


def test_dataframe_records(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    response = invocations(live_server, CHURN, json={"dataframe_records": records(churn_rows)})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == serving_project.predict(CHURN, churn_rows).tolist()


def test_instances_and_inputs(
    live_server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    expected = serving_project.predict(IRIS, iris_rows).tolist()
    lists = iris_rows.to_numpy().tolist()
    columns = {name: iris_rows[name].tolist() for name in iris_rows.columns}
    for payload in ({"instances": lists}, {"inputs": lists}, {"inputs": columns}):
        response = invocations(live_server, IRIS, json=payload)
        assert response.status_code == 200, (payload.keys(), response.text)
        assert response.json()["predictions"] == expected


def test_csv_body(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    response = invocations(
        live_server,
        CHURN,
        content=churn_rows.to_csv(index=False).encode(),
        headers={"content-type": "text/csv; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == serving_project.predict(CHURN, churn_rows).tolist()


def test_model_named_by_header(live_server: LiveServer, serving_project: ServingProject) -> None:
    response = httpx.post(
        f"{live_server.url}/invocations",
        json={"instances": [[0.1, 0.2]]},
        headers={"x-model-name": PRICE},
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], serving_project.predict(PRICE, [[0.1, 0.2]])
    )
    assert response.headers["x-model-version"] == serving_project.versions[PRICE]


def test_several_models_need_a_name(live_server: LiveServer) -> None:
    response = invocations(live_server, None, json={"instances": [[0.1, 0.2]]})
    assert response.status_code == 400
    assert "?model=" in response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"json": {"instances": [[1, 2]], "inputs": [[1, 2]]}}, "exactly one of"),
        ({"json": {"rows": [[1, 2]]}}, "exactly one of"),
        ({"json": [[1, 2]]}, "JSON object"),
        ({"json": {"dataframe_split": {"columns": ["x1", "x2"]}}}, "dataframe_split"),
        ({"json": {"dataframe_split": {"columns": ["x1"], "data": [[1, 2]]}}}, "dataframe_split"),
        ({"json": {"dataframe_records": {"x1": 1}}}, "list of records"),
        ({"json": {"dataframe_records": [{"x1": 1, "x2": "two"}]}}, "feature 'x2' is not a"),
        ({"content": b"x1\n1\n", "headers": {"content-type": "text/csv"}}, "x2"),
        ({"content": b'"a\n', "headers": {"content-type": "text/csv"}}, "CSV"),
        ({"content": b"x1,x2\n1,2", "headers": {"content-type": "text/plain"}}, "content type"),
    ],
)
def test_invocations_bad_requests_are_400(
    live_server: LiveServer, kwargs: dict[str, object], fragment: str
) -> None:
    response = invocations(live_server, PRICE, **kwargs)
    assert response.status_code == 400, response.text
    body = response.json()
    assert fragment in body["error"]
    assert (body["error_code"], body["message"]) == ("BAD_REQUEST", body["error"])  # MLflow's


def test_invocations_unknown_model_is_404(live_server: LiveServer) -> None:
    response = invocations(live_server, "nosuch", json={"instances": [[1, 2]]})
    assert response.status_code == 404
    assert "nosuch" in response.json()["error"]
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    elsewhere = predict(live_server, "nosuch", {"instances": [[1, 2]]})
    assert "error_code" not in elsewhere.json()  # MLflow's shape on MLflow's path only


def test_version_answers_the_server_version_and_params_are_accepted(
    live_server: LiveServer, serving_project: ServingProject
) -> None:
    version = httpx.get(f"{live_server.url}/version")
    assert version.status_code == 200
    assert version.text == mlserve.__version__
    body = {"dataframe_split": {"columns": ["x1", "x2"], "data": [[1.0, 2.0]]}, "params": {}}
    response = invocations(live_server, PRICE, json=body)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], serving_project.predict(PRICE, [[1.0, 2.0]])
    )
