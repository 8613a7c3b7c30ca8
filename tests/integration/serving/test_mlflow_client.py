"""MLflow's own scoring client, and the frames MLflow users send, against /invocations.

A model registered from a bare estimator has the default feature names f0..f3; a frame
without column names (columns 0..3) maps to them by position. A model with real names never
takes columns by position.
"""

from __future__ import annotations

import io
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from serving_harness import (
    CHURN,
    MLSERVE,
    PRICE,
    LiveServer,
    ServingProject,
    running_server,
    server_environment,
)
from sklearn.linear_model import LogisticRegression

import mlserve

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # importing MLflow warns about MLflow's own type hints
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

PLAIN = "plain"
PARQUET = "application/vnd.apache.parquet"


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    """A project whose only model was fitted on a bare array and registered with the CLI."""
    root = tmp_path_factory.mktemp("plain-project")
    rng = np.random.default_rng(5)
    features = rng.normal(size=(200, 4))
    labels = (features[:, 0] + 2 * features[:, 2] - features[:, 3] > 0).astype(int)
    model = LogisticRegression().fit(features, labels)
    joblib.dump(model, root / "plain.joblib")
    subprocess.run(
        [MLSERVE, "register", "plain.joblib", "--name", PLAIN, "--alias", "production"],
        cwd=root,
        env=server_environment(),
        check=True,
        capture_output=True,
    )
    return root, model


@pytest.fixture(scope="module")
def plain_server(plain_model: tuple[Path, LogisticRegression]) -> Iterator[LiveServer]:
    """`mlserve serve` of the plain model."""
    root, _ = plain_model
    with running_server(root) as server:
        yield server


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Fresh rows for the plain model."""
    return np.random.default_rng(6).normal(size=(12, 4)).round(4)


def expected(plain_model: tuple[Path, LogisticRegression], rows: np.ndarray) -> list[int]:
    """The plain model's predictions made in this process."""
    return [int(v) for v in plain_model[1].predict(rows)]


def test_mlflow_client_pings_reads_the_version_and_scores_an_unnamed_frame(
    plain_server: LiveServer, plain_model: tuple[Path, LogisticRegression], rows: np.ndarray
) -> None:
    client = ScoringServerClient("127.0.0.1", plain_server.port)
    client.wait_server_ready(timeout=30)
    assert client.get_version() == mlserve.__version__
    frame = pd.DataFrame(rows)
    assert list(frame.columns) == [0, 1, 2, 3]
    response = client.invoke(frame)
    assert response["predictions"] == expected(plain_model, rows)


def test_mlflow_client_sends_arrays_named_frames_and_params(
    plain_server: LiveServer, plain_model: tuple[Path, LogisticRegression], rows: np.ndarray
) -> None:
    client = ScoringServerClient("127.0.0.1", plain_server.port)
    assert client.invoke(rows)["predictions"] == expected(plain_model, rows)
    named = pd.DataFrame(rows, columns=["f0", "f1", "f2", "f3"])
    assert client.invoke(named, params={"note": "ignored"})["predictions"] == expected(
        plain_model, rows
    )


def test_unnamed_columns_map_by_their_number_not_their_order(
    plain_server: LiveServer, plain_model: tuple[Path, LogisticRegression], rows: np.ndarray
) -> None:
    shuffled = pd.DataFrame(rows)[[2, 0, 3, 1]]
    response = ScoringServerClient("127.0.0.1", plain_server.port).invoke(shuffled)
    assert response["predictions"] == expected(plain_model, rows)
    records = [{str(k): v for k, v in r.items()} for r in shuffled.to_dict(orient="records")]
    answered = httpx.post(
        f"{plain_server.url}/invocations", json={"dataframe_records": records}, timeout=30
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["predictions"] == expected(plain_model, rows)


def test_csv_and_parquet_bodies_of_unnamed_frames(
    plain_server: LiveServer, plain_model: tuple[Path, LogisticRegression], rows: np.ndarray
) -> None:
    frame = pd.DataFrame(rows)
    csv = httpx.post(
        f"{plain_server.url}/invocations",
        content=frame.to_csv(index=False).encode(),
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    assert csv.status_code == 200, csv.text
    assert csv.json()["predictions"] == expected(plain_model, rows)
    # Parquet wants text column names, so an unnamed frame's columns arrive as "0".."3".
    parquet = httpx.post(
        f"{plain_server.url}/invocations",
        content=frame.rename(columns=str).to_parquet(),
        headers={"content-type": PARQUET},
        timeout=30,
    )
    assert parquet.status_code == 200, parquet.text
    assert parquet.json()["predictions"] == expected(plain_model, rows)


def test_parquet_body_with_an_index(
    live_server: LiveServer, serving_project: ServingProject, price_rows: pd.DataFrame
) -> None:
    frame = price_rows.set_index(pd.Index(range(100, 100 + len(price_rows)), name="row"))
    response = httpx.post(
        f"{live_server.url}/invocations?model={PRICE}",
        content=frame.to_parquet(),
        headers={"content-type": PARQUET},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], serving_project.predict(PRICE, price_rows)
    )


def test_parquet_body_with_categorical_columns(
    live_server: LiveServer, serving_project: ServingProject, churn_rows: pd.DataFrame
) -> None:
    frame = churn_rows.astype({"plan": "category", "region": "category"})
    response = httpx.post(
        f"{live_server.url}/invocations?model={CHURN}",
        content=frame.to_parquet(),
        headers={"content-type": PARQUET},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == serving_project.predict(CHURN, churn_rows).tolist()


def test_a_model_with_real_names_never_takes_columns_by_position(
    live_server: LiveServer,
) -> None:
    frame = pd.DataFrame([[0.1, 0.2], [0.3, 0.4]])
    response = httpx.post(
        f"{live_server.url}/invocations?model={PRICE}",
        json={"dataframe_split": frame.to_dict(orient="split")},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert "'columns' must be a list of names" in body["message"]


def test_a_body_that_is_not_parquet_is_a_400_naming_it(live_server: LiveServer) -> None:
    response = httpx.post(
        f"{live_server.url}/invocations?model={PRICE}",
        content=io.BytesIO(b"x1,x2\n1,2\n").read(),
        headers={"content-type": PARQUET},
        timeout=30,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert "not a Parquet file" in body["message"]
