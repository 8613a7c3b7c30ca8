"""Feedback over HTTP joined to logged predictions, online scores, `mlserve log export`, and
redaction end to end, against one real server (with an API key) and its own log file."""

from __future__ import annotations

import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from serving_harness import (
    CHURN,
    IRIS,
    IRIS_FEATURES,
    MLSERVE,
    PRICE,
    LiveServer,
    ServingProject,
    running_server,
    server_environment,
    v2_matrix_request,
)
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

from mlserve.monitoring.predlog import PredictionLogStore, PredictionRecord

KEY = "feedback-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
IRIS_CLASSES = ["setosa", "versicolor", "virginica"]


def logged_records(log_url: str, model: str) -> list[PredictionRecord]:
    """Every predicted row of ``model`` in the log, read through the store."""
    store = PredictionLogStore(log_url)
    try:
        return store.read_records(model)
    finally:
        store.close()


@pytest.fixture(scope="module")
def log_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The prediction log of this module's server."""
    return f"sqlite:///{tmp_path_factory.mktemp('feedback-log') / 'predictions.db'}"


@pytest.fixture(scope="module")
def server(
    serving_project: ServingProject, log_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Every production model, an API key, sepal_width and region redacted from the log, and
    iris's responses cached."""
    env = {
        "MLSERVE_API_KEY": KEY,
        "MLSERVE_MODELS__IRIS__CACHE": "true",
        "MLSERVE_PREDICTION_LOG_URL": log_url,
        "MLSERVE_PREDICTION_LOG_REDACT": '["sepal_width", "region"]',
    }
    with running_server(
        serving_project.root,
        env=env,
        headers=AUTH,
        log_dir=tmp_path_factory.mktemp("feedback-server-logs"),
    ) as live:
        yield live


def post(server: LiveServer, path: str, body: Any, request_id: str | None = None) -> httpx.Response:
    """POST JSON with the API key (and a chosen request id)."""
    headers = {**AUTH, **({"x-request-id": request_id} if request_id else {})}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)


def get(server: LiveServer, path: str) -> httpx.Response:
    """GET with the API key."""
    return httpx.get(f"{server.url}{path}", headers=AUTH, timeout=30)


def metric(server: LiveServer, name: str, **labels: str) -> float | None:
    """One sample from /metrics, or None."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in get(server, "/metrics").text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0][len(name) + 1 :] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return None


def other_class(label: str) -> str:
    """A wrong label for ``label``."""
    return IRIS_CLASSES[(IRIS_CLASSES.index(label) + 1) % len(IRIS_CLASSES)]


def test_feedback_joins_labels_and_scores_online_accuracy(
    server: LiveServer, serving_project: ServingProject, iris_rows: pd.DataFrame
) -> None:
    version = serving_project.versions[IRIS]
    predicted: list[str] = []
    truth: list[str] = []
    items: list[dict[str, Any]] = []
    for i in range(12):  # one row each over /v1, labelled right for 8 of them, wrong for 4
        request_id = f"iris-{uuid.uuid4().hex}"
        row = iris_rows.iloc[i * 2].tolist()
        response = post(server, f"/v1/models/{IRIS}:predict", {"instances": [row]}, request_id)
        assert response.status_code == 200
        assert response.headers["x-request-id"] == request_id
        prediction = response.json()["predictions"][0]
        label = prediction if i < 8 else other_class(prediction)
        predicted.append(prediction)
        truth.append(label)
        items.append({"request_id": request_id, "label": label})
    multi = f"iris-multi-{uuid.uuid4().hex}"  # three rows over OIP; rows 0 and 2 labelled
    rows = iris_rows.iloc[[1, 15, 29]].to_numpy()
    response = post(server, f"/v2/models/{IRIS}/infer", v2_matrix_request(rows), multi)
    multi_predicted = response.json()["outputs"][0]["data"]
    for row, label in ((0, multi_predicted[0]), (2, other_class(multi_predicted[2]))):
        items.append({"request_id": multi, "label": label, "row": row})
        predicted.append(multi_predicted[row])
        truth.append(label)
    items.append({"request_id": "never-sent", "label": "setosa"})

    response = post(server, f"/v1/models/{IRIS}/feedback", {"feedback": items})
    assert response.status_code == 200, response.text
    assert response.json() == {"joined": 14, "unknown": ["never-sent"]}

    monitoring = get(server, f"/v1/models/{IRIS}/monitoring")
    assert monitoring.status_code == 200
    body = monitoring.json()
    scores = body["versions"][version]
    assert scores["labelled_rows"] == 14
    assert scores["task"] == "classification"
    assert scores["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert scores["f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert scores["mae"] is None
    assert body["window_s"] == 86_400
    assert body["prediction_log"]["enabled"] is True
    assert body["prediction_log"]["logged_rows"] >= 15

    labels = {"model": IRIS, "version": version}
    assert metric(server, "mlserve_online_accuracy", **labels) == pytest.approx(
        accuracy_score(truth, predicted)
    )
    assert metric(server, "mlserve_online_labelled_rows", **labels) == 14
    assert metric(server, "mlserve_feedback_total", **labels) == 14
    assert metric(server, "mlserve_feedback_unknown_total", model=IRIS) == 1


def test_regressor_feedback_in_the_compact_form_scores_mae(
    server: LiveServer, serving_project: ServingProject, price_rows: pd.DataFrame
) -> None:
    ids, predicted = [], []
    for i in range(6):
        request_id = f"price-{uuid.uuid4().hex}"
        record = price_rows.iloc[i].to_dict()
        response = post(server, f"/v1/models/{PRICE}:predict", {"instances": [record]}, request_id)
        assert response.status_code == 200
        ids.append(request_id)
        predicted.append(response.json()["predictions"][0])
    truth = [p + (0.5 if i % 2 else -1.5) for i, p in enumerate(predicted)]

    response = post(server, f"/v1/models/{PRICE}/feedback", {"request_ids": ids, "labels": truth})
    assert response.json() == {"joined": 6, "unknown": []}
    scores = get(server, f"/v1/models/{PRICE}/monitoring").json()["versions"]
    version = serving_project.versions[PRICE]
    assert scores[version]["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert scores[version]["accuracy"] is None
    assert metric(server, "mlserve_online_mae", model=PRICE, version=version) == pytest.approx(
        mean_absolute_error(truth, predicted)
    )


def test_a_model_without_labels_reports_no_scores(
    server: LiveServer, serving_project: ServingProject
) -> None:
    body = get(server, f"/v1/models/{CHURN}/monitoring").json()
    assert body["versions"] == {
        serving_project.versions[CHURN]: {
            "labelled_rows": 0,
            "task": "classification",
            "accuracy": None,
            "f1": None,
            "mae": None,
        }
    }


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"feedback": [{"request_id": "a"}]}, 400, "feedback[0].label: is missing"),
        ({"request_ids": ["a", "b"], "labels": ["setosa"]}, 400, "labels: must be a list"),
        ({"feedback": [{"request_id": "a", "label": "tulip"}]}, 400, "not a class"),
        ([], 400, "JSON object"),
    ],
)
def test_malformed_feedback_is_400_naming_the_field(
    server: LiveServer, body: Any, status: int, message: str
) -> None:
    response = post(server, f"/v1/models/{IRIS}/feedback", body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_feedback_for_an_unknown_model_is_404(server: LiveServer) -> None:
    body = {"feedback": [{"request_id": "a", "label": 1}]}
    assert post(server, "/v1/models/nope/feedback", body).status_code == 404
    assert get(server, "/v1/models/nope/monitoring").status_code == 404


def test_feedback_and_monitoring_need_the_api_key(server: LiveServer) -> None:
    body = {"feedback": [{"request_id": "a", "label": "setosa"}]}
    no_key = httpx.post(f"{server.url}/v1/models/{IRIS}/feedback", json=body, timeout=30)
    assert no_key.status_code == 401
    wrong = httpx.get(
        f"{server.url}/v1/models/{IRIS}/monitoring", headers={"x-api-key": "wrong"}, timeout=30
    )
    assert wrong.status_code == 403


def test_both_routes_are_documented(server: LiveServer) -> None:
    schema = get(server, "/openapi.json").json()
    assert "post" in schema["paths"]["/v1/models/{model_name}/feedback"]
    assert "get" in schema["paths"]["/v1/models/{model_name}/monitoring"]
    assert "FeedbackRequestDoc" in schema["components"]["schemas"]
    assert "MonitoringResponseDoc" in schema["components"]["schemas"]


def export(project: ServingProject, log_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mlserve log export ARGS` in the project, against this module's log."""
    return subprocess.run(
        [MLSERVE, "log", "export", *args],
        cwd=project.root,
        env=server_environment({"MLSERVE_PREDICTION_LOG_URL": log_url, "COLUMNS": "200"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_log_export_writes_the_logged_rows_without_redacted_features(
    server: LiveServer,
    serving_project: ServingProject,
    log_url: str,
    iris_rows: pd.DataFrame,
    tmp_path: Path,
) -> None:
    sent = iris_rows.iloc[:5].to_numpy()
    request_id = f"export-{uuid.uuid4().hex}"
    response = post(server, f"/v2/models/{IRIS}/infer", v2_matrix_request(sent), request_id)
    predictions = response.json()["outputs"][0]["data"]
    post(server, f"/v1/models/{IRIS}/feedback", {"request_ids": [request_id], "labels": ["setosa"]})

    parquet, csv = tmp_path / "iris.parquet", tmp_path / "iris.csv"
    result = export(
        serving_project, log_url, f"{IRIS}@production", "--since", "1h", "-o", str(parquet)
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr
    result = export(serving_project, log_url, IRIS, "--format", "csv", "-o", str(csv))
    assert result.returncode == 0, result.stderr

    for frame in (pd.read_parquet(parquet), pd.read_csv(csv)):
        assert "sepal_width" not in frame.columns  # redacted
        assert set(frame["model"]) == {IRIS}
        assert {str(v) for v in frame["version"]} == {serving_project.versions[IRIS]}
        mine = frame[frame["request_id"] == request_id].sort_values("row")
        assert mine["row"].tolist() == [0, 1, 2, 3, 4]
        assert mine["prediction"].tolist() == predictions
        kept = [f for f in IRIS_FEATURES if f != "sepal_width"]
        np.testing.assert_allclose(mine[kept].to_numpy(), sent[:, [0, 2, 3]])
        assert (mine["latency_ms"] >= 0).all()
    assert str(pd.read_parquet(parquet)["ts"].dt.tz) == "UTC"

    future = export(serving_project, log_url, IRIS, "--since", "2099-01-01", "-o", str(csv))
    assert future.returncode == 0
    assert len(pd.read_csv(csv)) == 0


def test_log_export_mistakes_are_one_line_errors(
    serving_project: ServingProject, log_url: str, tmp_path: Path
) -> None:
    out = str(tmp_path / "x.csv")
    cases = [
        ((IRIS, "--since", "yesterday-ish", "-o", out), 4, "--since"),
        ((IRIS, "-o", str(tmp_path / "x.json")), 4, "unknown export format"),
        (("nope", "-o", out), 3, "not registered"),
    ]
    for args, code, message in cases:
        result = export(serving_project, log_url, *args)
        assert result.returncode == code, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    missing = export(serving_project, f"sqlite:///{tmp_path / 'none.db'}", IRIS, "-o", out)
    assert missing.returncode == 3
    assert "no prediction log" in missing.stderr
    assert not (tmp_path / "none.db").exists()


def test_redacted_features_are_never_written(
    server: LiveServer, log_url: str, churn_rows: pd.DataFrame
) -> None:
    request_id = f"churn-{uuid.uuid4().hex}"
    records = churn_rows.iloc[:4].astype(object).where(churn_rows.iloc[:4].notna(), None)
    response = post(
        server, f"/v1/models/{CHURN}:predict", {"instances": records.to_dict("records")}, request_id
    )
    assert response.status_code == 200
    post(server, f"/v1/models/{CHURN}/feedback", {"request_ids": ["flush"], "labels": ["no"]})
    inputs = [r.inputs for r in logged_records(log_url, CHURN) if r.request_id == request_id]
    assert [set(i) for i in inputs] == [{"plan", "monthly", "tenure"}] * 4
    with sqlite3.connect(log_url.removeprefix("sqlite:///")) as conn:
        stored = conn.execute(
            "SELECT features, inputs FROM prediction_requests WHERE request_id = ?", (request_id,)
        ).fetchall()
    assert len(stored) == 1  # one database row for the 4-row request
    assert set(orjson.loads(stored[0][0])) == {"plan", "monthly", "tenure"}
    assert "region" not in stored[0][0] + stored[0][1]
    assert [i["tenure"] for i in inputs] == churn_rows["tenure"].iloc[:4].tolist()


def test_cache_hits_are_logged_under_their_own_request_id(
    server: LiveServer, log_url: str, iris_rows: pd.DataFrame
) -> None:
    body = {"instances": iris_rows.iloc[[3, 23]].to_numpy().tolist()}
    first, second = f"miss-{uuid.uuid4().hex}", f"hit-{uuid.uuid4().hex}"
    computed = post(server, f"/v1/models/{IRIS}:predict", body, first)
    hits_before = metric(
        server, "mlserve_cache_hits_total", model=IRIS, version=computed.json()["model_version"]
    )
    cached = post(server, f"/v1/models/{IRIS}:predict", body, second)
    assert cached.content == computed.content
    assert (
        metric(
            server, "mlserve_cache_hits_total", model=IRIS, version=computed.json()["model_version"]
        )
        == (hits_before or 0) + 1
    )

    labels = computed.json()["predictions"]
    feedback = {
        "feedback": [
            {"request_id": second, "label": label, "row": i} for i, label in enumerate(labels)
        ]
    }
    assert post(server, f"/v1/models/{IRIS}/feedback", feedback).json() == {
        "joined": 2,
        "unknown": [],
    }
    logged = sorted(
        (r for r in logged_records(log_url, IRIS) if r.request_id in (first, second)),
        key=lambda r: (r.request_id != first, r.row),
    )
    assert [(r.request_id, r.row, r.prediction) for r in logged] == [
        (first, 0, labels[0]),
        (first, 1, labels[1]),
        (second, 0, labels[0]),
        (second, 1, labels[1]),
    ]
    assert [r.inputs for r in logged[:2]] == [r.inputs for r in logged[2:]]  # the same inputs
    assert "sepal_width" not in logged[0].inputs


def test_a_restarted_server_reports_the_scores_already_labelled(
    server: LiveServer,
    serving_project: ServingProject,
    log_url: str,
    iris_rows: pd.DataFrame,
    tmp_path: Path,
) -> None:
    ids = [f"restart-{i}-{uuid.uuid4().hex}" for i in range(4)]
    for i, request_id in enumerate(ids):
        body = {"instances": [iris_rows.iloc[i + 4].tolist()]}
        assert post(server, f"/v1/models/{IRIS}:predict", body, request_id).status_code == 200
    feedback = {"request_ids": ids, "labels": ["setosa"] * 4}
    assert post(server, f"/v1/models/{IRIS}/feedback", feedback).json()["joined"] == 4
    version = serving_project.versions[IRIS]
    expected = get(server, f"/v1/models/{IRIS}/monitoring").json()["versions"][version]

    env = {"MLSERVE_API_KEY": KEY, "MLSERVE_PREDICTION_LOG_URL": log_url}
    with running_server(
        serving_project.root, IRIS, env=env, headers=AUTH, log_dir=tmp_path
    ) as again:
        deadline = time.monotonic() + 60
        labels = {"model": IRIS, "version": version}
        while metric(again, "mlserve_online_labelled_rows", **labels) is None:
            assert time.monotonic() < deadline, "the restarted server never scored the labels"
            time.sleep(0.1)
        assert metric(again, "mlserve_online_labelled_rows", **labels) == expected["labelled_rows"]
        assert metric(again, "mlserve_online_accuracy", **labels) == pytest.approx(
            expected["accuracy"]
        )
