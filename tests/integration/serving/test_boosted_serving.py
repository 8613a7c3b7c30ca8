"""XGBoost and LightGBM models served by a real `mlserve serve`, and scored by `mlserve predict`
and `mlserve batch`: every door answers what the framework's own predict gives."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from serving_harness import (
    MLSERVE,
    LiveServer,
    binary_request,
    decode_binary_response,
    registry,
    running_server,
    server_environment,
    v2_matrix_request,
)
from sklearn.datasets import make_classification, make_regression

from mlserve.training.registration import Registration, register_model

XGB = "boosted-xgb"
"""A binary XGBoost classifier registered from its JSON file."""
LGB = "boosted-lgb"
"""A LightGBM regressor registered from its text file."""
NAMES = ["age", "income", "score", "visits"]
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BoostedProject:
    """A project folder whose registry holds XGB and LGB in production, and the frameworks' own
    models to compare with."""

    root: Path
    classifier: Any
    """xgboost.XGBClassifier loaded from the registered JSON file."""
    regressor: Any
    """lightgbm.Booster loaded from the registered text file."""


def holed(features: np.ndarray, seed: int) -> np.ndarray:
    """``features`` with about one cell in six missing (NaN)."""
    rng = np.random.default_rng(seed)
    copy = features.copy()
    copy[rng.random(copy.shape) < 1 / 6] = np.nan
    return copy


@pytest.fixture(scope="module")
def boosted_project(tmp_path_factory: pytest.TempPathFactory) -> BoostedProject:
    root = tmp_path_factory.mktemp("boosted-project")
    staging = root / "staging"
    staging.mkdir()
    features, labels = make_classification(
        200, len(NAMES), n_informative=3, n_redundant=1, random_state=21
    )
    train = pd.DataFrame(holed(features, 21), columns=NAMES)
    classifier = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(train, labels)
    classifier.save_model(staging / "classifier.json")
    features, target = make_regression(200, len(NAMES), noise=1.0, random_state=22)
    train = pd.DataFrame(holed(features, 22), columns=NAMES)
    regressor = lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(train, target)
    regressor.booster_.save_model(staging / "regressor.txt")
    with registry(root) as store:
        for name, file in ((XGB, "classifier.json"), (LGB, "regressor.txt")):
            register_model(
                store, staging / file, Registration(name=name, alias="production"), safe=True
            )
    reloaded = xgb.XGBClassifier()
    reloaded.load_model(staging / "classifier.json")
    return BoostedProject(root, reloaded, lgb.Booster(model_file=staging / "regressor.txt"))


@pytest.fixture(scope="module")
def boosted_server(
    boosted_project: BoostedProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One `mlserve serve` of both models for the module."""
    with running_server(
        boosted_project.root, log_dir=tmp_path_factory.mktemp("boosted-logs")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """Fresh rows with missing cells, unseen in training."""
    rng = np.random.default_rng(23)
    return pd.DataFrame(holed(rng.normal(size=(40, len(NAMES))), 23), columns=NAMES)


def records(frame: pd.DataFrame) -> list[dict[str, float | None]]:
    """Rows as JSON records, missing values as null."""
    return [
        {k: (None if math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def test_both_models_load_with_their_frameworks(boosted_server: LiveServer) -> None:
    listed = httpx.get(f"{boosted_server.url}/v1/models", timeout=TIMEOUT_S).json()["models"]
    assert {(m["name"], m["framework"], m["state"]) for m in listed} == {
        (XGB, "xgboost", "ready"),
        (LGB, "lightgbm", "ready"),
    }


def test_oip_json_answers_as_the_frameworks(
    boosted_server: LiveServer, boosted_project: BoostedProject, rows: pd.DataFrame
) -> None:
    complete = rows.dropna()  # JSON numbers have no NaN
    body = v2_matrix_request(
        complete.to_numpy(), outputs=[{"name": "predict"}, {"name": "predict_proba"}]
    )
    response = httpx.post(f"{boosted_server.url}/v2/models/{XGB}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["predict"]["data"] == boosted_project.classifier.predict(complete).tolist()
    expected_proba = boosted_project.classifier.predict_proba(complete)
    assert outputs["predict_proba"]["shape"] == [len(complete), 2]
    assert outputs["predict_proba"]["data"] == expected_proba.astype(np.float64).ravel().tolist()
    response = httpx.post(
        f"{boosted_server.url}/v2/models/{LGB}/infer",
        json=v2_matrix_request(complete.to_numpy()),
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["data"] == boosted_project.regressor.predict(complete.to_numpy()).tolist()


def test_oip_binary_tensors_with_missing_cells_answer_bit_for_bit(
    boosted_server: LiveServer, boosted_project: BoostedProject, rows: pd.DataFrame
) -> None:
    matrix = rows.to_numpy(dtype=np.float64)
    assert np.isnan(matrix).any()
    content, headers = binary_request(
        [("input-0", matrix, "FP64")],
        outputs=[{"name": "predict"}, {"name": "predict_proba"}],
        parameters={"binary_data_output": True},
    )
    response = httpx.post(
        f"{boosted_server.url}/v2/models/{XGB}/infer",
        content=content,
        headers=headers,
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    outputs = decode_binary_response(response)
    assert np.array_equal(outputs["predict"], boosted_project.classifier.predict(rows))
    assert np.array_equal(outputs["predict_proba"], boosted_project.classifier.predict_proba(rows))
    content, headers = binary_request(
        [("input-0", matrix, "FP64")], parameters={"binary_data_output": True}
    )
    response = httpx.post(
        f"{boosted_server.url}/v2/models/{LGB}/infer",
        content=content,
        headers=headers,
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    (values,) = decode_binary_response(response).values()
    assert np.array_equal(values, boosted_project.regressor.predict(matrix))


def test_v1_predict_with_nulls_answers_as_the_frameworks(
    boosted_server: LiveServer, boosted_project: BoostedProject, rows: pd.DataFrame
) -> None:
    body = {"instances": records(rows), "probabilities": True}
    response = httpx.post(
        f"{boosted_server.url}/v1/models/{XGB}:predict", json=body, timeout=TIMEOUT_S
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["predictions"] == boosted_project.classifier.predict(rows).tolist()
    assert answer["classes"] == [0, 1]
    expected = boosted_project.classifier.predict_proba(rows).astype(np.float64)
    assert answer["probabilities"] == expected.tolist()
    response = httpx.post(
        f"{boosted_server.url}/v1/models/{LGB}:predict",
        json={"instances": records(rows)},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    expected_values = boosted_project.regressor.predict(rows.to_numpy())
    assert response.json()["predictions"] == expected_values.tolist()


def test_invocations_dataframe_split_answers_as_the_frameworks(
    boosted_server: LiveServer, boosted_project: BoostedProject, rows: pd.DataFrame
) -> None:
    columns = NAMES[::-1]  # by name, in any order
    data = [[r[c] for c in columns] for r in records(rows)]
    for name, expected in (
        (XGB, boosted_project.classifier.predict(rows)),
        (LGB, boosted_project.regressor.predict(rows.to_numpy())),
    ):
        response = httpx.post(
            f"{boosted_server.url}/invocations",
            params={"model": name},
            json={"dataframe_split": {"columns": columns, "data": data}},
            timeout=TIMEOUT_S,
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected.tolist()}


def run_mlserve(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLSERVE, *args],
        cwd=root,
        env=server_environment({"COLUMNS": "200", "NO_COLOR": "1"}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_mlserve_predict_and_batch_score_a_csv_as_the_frameworks(
    boosted_project: BoostedProject, rows: pd.DataFrame, tmp_path: Path
) -> None:
    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)
    read_back = pd.read_csv(source, float_precision="round_trip")
    assert read_back.isna().to_numpy().any()
    expected = boosted_project.classifier.predict(read_back)
    expected_proba = boosted_project.classifier.predict_proba(read_back)
    scored = tmp_path / "scored.csv"
    result = run_mlserve(
        boosted_project.root, "predict", XGB, str(source), "--proba", "-o", str(scored)
    )
    assert result.returncode == 0, result.stderr
    written = pd.read_csv(scored, float_precision="round_trip")
    assert written["prediction"].tolist() == expected.tolist()
    assert np.array_equal(written[["proba_0", "proba_1"]].to_numpy(), expected_proba)
    batch_output = tmp_path / "batch.parquet"
    result = run_mlserve(
        boosted_project.root, "batch", LGB, str(source), str(batch_output), "--workers", "1"
    )
    assert result.returncode == 0, result.stderr
    batch = pd.read_parquet(batch_output)
    assert np.array_equal(
        batch["prediction"].to_numpy(), boosted_project.regressor.predict(read_back.to_numpy())
    )
