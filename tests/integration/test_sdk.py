"""The Python SDK against a real registry (SQLite in a temporary folder) and a real server.

`mlserve.register`, `load` and `train` open the registry the CLI would open from the same
folder and environment; `mlserve.Client` talks to a `mlserve serve` process started by the
serving harness, over binary OIP tensors.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from serving_harness import MLSERVE, running_server, server_environment
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlserve
from mlserve.batch.scoring import PREDICTION, PROBA_PREFIX
from mlserve.errors import (
    ArtifactIntegrityError,
    DatasetError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)
from mlserve.runtimes import dump_sklearn
from mlserve.sdk.client import PREDICTION_COLUMN
from mlserve.sdk.client import PROBA_PREFIX as CLIENT_PROBA_PREFIX
from mlserve.sdk.saving import save_model

CHURN_FEATURES = ["plan", "region", "monthly", "tenure"]
PRICE_FEATURES = ["x1", "x2"]
API_KEY = "sdk-test-key-1234"


def churn_frame(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Customers with two categorical and two numeric features, and whether they churned."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "pro", "enterprise"], rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    monthly = rng.normal(50, 15, rows).round(2)
    tenure = rng.integers(1, 72, rows)
    score = (plan == "basic") * 1.5 + (monthly > 55) - tenure / 30 + rng.normal(0, 0.5, rows)
    churned = np.where(score > 0.3, "yes", "no")
    return pd.DataFrame(
        {"plan": plan, "region": region, "monthly": monthly, "tenure": tenure, "churned": churned}
    )


def price_frame(rows: int = 120, seed: int = 1) -> pd.DataFrame:
    """Two numeric features and a numeric target."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.uniform(0, 10, rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "price": 3 * x1 - x2 + rng.normal(0, 0.1, rows)})


def fit_churn(frame: pd.DataFrame, c: float = 1.0) -> Pipeline:
    """A scikit-learn pipeline on raw churn columns (one-hot encoded categories)."""
    prepare = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
            ("numbers", StandardScaler(), ["monthly", "tenure"]),
        ]
    )
    pipeline = Pipeline([("prepare", prepare), ("model", LogisticRegression(C=c))])
    return pipeline.fit(frame[CHURN_FEATURES], frame["churned"])


def fit_price(frame: pd.DataFrame) -> Ridge:
    """A regressor fitted on a frame, so it records its feature names."""
    return Ridge().fit(frame[PRICE_FEATURES], frame["price"])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder to work in, its registry named by MLSERVE_HOME as a user would set it."""
    for key in list(os.environ):
        if key.startswith("MLSERVE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLSERVE_HOME", str(tmp_path / "registry-home"))
    return tmp_path


# -- register and load --------------------------------------------------------------------------


def test_in_memory_pipeline_registers_and_loads_by_alias(project: Path) -> None:
    frame = churn_frame()
    pipeline = fit_churn(frame)

    version = mlserve.register(
        pipeline,
        name="churn",
        signature_from=frame,
        target="churned",
        alias="staging",
        description="from a notebook",
        tags={"team": "growth"},
        metrics={"auc": 0.9},
    )
    assert (version.name, version.version, version.framework) == ("churn", 1, "sklearn")
    assert version.aliases == ("staging",)
    assert version.tags == {"team": "growth"}
    assert version.metrics == {"auc": 0.9}
    assert version.description == "from a notebook"
    assert version.reference_profile is not None  # signature_from gave the drift reference
    kinds = {f.name: f.kind for f in version.signature.inputs}
    assert kinds == {
        "plan": "categorical",
        "region": "categorical",
        "monthly": "numeric",
        "tenure": "numeric",
    }
    assert version.signature.target == "churned"

    model = mlserve.load("churn@staging")
    assert isinstance(model, mlserve.LoadedModel)
    assert (model.name, model.version, model.framework) == ("churn", 1, "sklearn")
    assert model.signature.feature_names == CHURN_FEATURES
    assert model.classes == ["no", "yes"]
    rows = churn_frame(rows=40, seed=7)  # with the target column: an extra column, ignored
    np.testing.assert_array_equal(model.predict(rows), pipeline.predict(rows[CHURN_FEATURES]))
    proba = model.predict_proba(rows)
    assert list(proba.columns) == ["no", "yes"]
    assert proba.index.equals(rows.index)
    np.testing.assert_allclose(proba.to_numpy(), pipeline.predict_proba(rows[CHURN_FEATURES]))
    assert mlserve.load("churn").version == 1  # a bare name: the latest without production


def test_the_registry_is_the_one_the_cli_opens(project: Path) -> None:
    frame = churn_frame()
    mlserve.register(fit_churn(frame), name="churn", signature_from=frame, target="churned")
    mlserve.register(
        fit_churn(frame, c=0.1), name="churn", signature_from=frame, target="churned", alias="b"
    )

    shown = subprocess.run(
        [MLSERVE, "models", "show", "churn@b", "--json"],
        cwd=project,
        env={**os.environ},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    described = json.loads(shown.stdout)
    assert described["version"] == 2
    assert (project / "registry-home" / "registry.db").is_file()
    assert not (project / ".mlserve").exists()  # MLSERVE_HOME, not the default folder


def test_a_model_file_path_registers_with_a_data_file(project: Path) -> None:
    frame = price_frame()
    regressor = fit_price(frame)
    path = dump_sklearn(regressor, project / "price.joblib")
    frame.to_csv(project / "train.csv", index=False)

    version = mlserve.register(
        str(path), name="price", signature_from=project / "train.csv", target="price"
    )
    assert version.framework == "sklearn"
    assert version.signature.feature_names == PRICE_FEATURES
    assert version.signature.task == "regression"

    model = mlserve.load("price:1")
    rows = price_frame(rows=20, seed=5)
    np.testing.assert_allclose(
        model.predict(rows), regressor.predict(rows[PRICE_FEATURES]), rtol=1e-12
    )
    with pytest.raises(InvalidInput, match="does not give probabilities"):
        model.predict_proba(rows)
    with pytest.raises(InvalidInput, match="no such model file"):
        mlserve.register(project / "missing.joblib", name="price")


def test_load_checks_rows_as_every_door_does(project: Path) -> None:
    frame = churn_frame()
    mlserve.register(fit_churn(frame), name="churn", signature_from=frame, target="churned")
    model = mlserve.load("churn")
    rows = churn_frame(rows=5, seed=3)[CHURN_FEATURES]

    unknown = rows.copy()
    unknown.loc[3, "plan"] = "platinum"
    with pytest.raises(InvalidInput, match=r"^row 3: feature 'plan' has an unknown category"):
        model.predict(unknown)
    text = rows.astype({"monthly": object})
    text.loc[1, "monthly"] = "abc"
    with pytest.raises(InvalidInput, match=r"^row 1: feature 'monthly' is not a number: 'abc'$"):
        model.predict(text)
    with pytest.raises(InvalidInput, match=r"missing feature column\(s\): 'tenure'"):
        model.predict(rows.drop(columns=["tenure"]))
    # The same rows with pandas' own categorical and nullable dtypes answer alike.
    typed = rows.astype({"plan": "category", "region": "string", "tenure": "Int64"})
    np.testing.assert_array_equal(model.predict(typed), model.predict(rows))


def test_load_refuses_a_changed_artifact(project: Path) -> None:
    frame = price_frame()
    version = mlserve.register(fit_price(frame), name="price")
    model_file = next((project / "registry-home" / "artifacts").rglob(version.model_file))
    model_file.write_bytes(model_file.read_bytes() + b"tampered")

    with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
        mlserve.load("price")


def test_unknown_references_are_not_found(project: Path) -> None:
    frame = price_frame()
    mlserve.register(fit_price(frame), name="price")
    with pytest.raises(NotFound, match="'nothing' is not registered"):
        mlserve.load("nothing")
    with pytest.raises(NotFound, match="no alias 'production'"):
        mlserve.load("price@production")
    with pytest.raises(NotFound, match="no version 4"):
        mlserve.load("price:4")


def test_an_object_that_is_no_model_is_refused(project: Path) -> None:
    with pytest.raises(InvalidInput, match=r"cannot register a builtins\.dict"):
        mlserve.register({"weights": [1, 2]}, name="nothing")


# -- other frameworks in memory -----------------------------------------------------------------


def _xgboost_booster(frame: pd.DataFrame) -> tuple[Any, np.ndarray]:
    import xgboost as xgb

    y = (frame["churned"] == "yes").astype(int)
    data = xgb.DMatrix(frame[["monthly", "tenure"]], label=y)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, data, 5)
    return booster, booster.predict(xgb.DMatrix(frame[["monthly", "tenure"]]))


def _lightgbm_booster(frame: pd.DataFrame) -> tuple[Any, np.ndarray]:
    import lightgbm as lgb

    y = (frame["churned"] == "yes").astype(int)
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(frame[["monthly", "tenure"]], label=y), 5)
    return booster, np.asarray(booster.predict(frame[["monthly", "tenure"]]))


def _onnx_model(frame: pd.DataFrame) -> tuple[Any, np.ndarray]:
    from skl2onnx import to_onnx

    x = frame[["monthly", "tenure"]].to_numpy(dtype=np.float32)
    regressor = Ridge().fit(x, frame["monthly"] * 2)
    return to_onnx(regressor, x[:1], target_opset=17), regressor.predict(x)


def _xgboost_classifier(frame: pd.DataFrame) -> tuple[Any, np.ndarray]:
    import xgboost as xgb

    y = (frame["churned"] == "yes").astype(int)
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(frame[["monthly", "tenure"]], y)
    return model, model.predict(frame[["monthly", "tenure"]])


NATIVE = {
    "xgboost booster": (_xgboost_booster, "xgboost", ".ubj"),
    "lightgbm booster": (_lightgbm_booster, "lightgbm", ".txt"),
    "onnx model": (_onnx_model, "onnx", ".onnx"),
    "xgboost classifier": (_xgboost_classifier, "xgboost", ".joblib"),
}


@pytest.mark.parametrize("kind", list(NATIVE))
def test_in_memory_models_are_saved_as_their_runtime_reads_them(kind: str, tmp_path: Path) -> None:
    make, framework, suffix = NATIVE[kind]
    model, expected = make(churn_frame())
    saved = save_model(model, tmp_path, safe=False)
    assert (saved.framework, saved.path.suffix) == (framework, suffix)
    rows = churn_frame()[["monthly", "tenure"]]
    if framework == "xgboost" and suffix == ".ubj":
        import xgboost as xgb

        again = xgb.Booster(model_file=str(saved.path)).predict(xgb.DMatrix(rows))
    elif framework == "lightgbm":
        import lightgbm as lgb

        again = lgb.Booster(model_file=str(saved.path)).predict(rows)
    elif framework == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(saved.path), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: rows.to_numpy(dtype=np.float32)}
        again = session.run(None, feed)[0].reshape(-1)
    else:
        import joblib

        again = joblib.load(saved.path).predict(rows)
    np.testing.assert_allclose(np.asarray(again), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", list(NATIVE))
def test_in_memory_models_of_other_frameworks_round_trip(kind: str, project: Path) -> None:
    make, framework, _suffix = NATIVE[kind]
    if importlib.util.find_spec(f"mlserve.runtimes.{framework}") is None:
        pytest.skip(f"the {framework} runtime is not in this tree yet")
    frame = churn_frame()
    model, expected = make(frame)
    data = frame[["monthly", "tenure"]]
    version = mlserve.register(model, name="native", signature_from=data)
    assert version.framework == framework
    loaded = mlserve.load("native")
    predicted = loaded.predict(data)
    if kind in {"xgboost booster", "lightgbm booster"}:
        # A native binary booster predicts the positive class's probability.
        predicted = loaded.predict_proba(data).to_numpy()[:, -1]
    np.testing.assert_allclose(np.asarray(predicted, dtype=np.float64), expected, rtol=1e-5)


# -- train --------------------------------------------------------------------------------------


def test_train_on_a_frame_registers_a_model_that_loads(project: Path) -> None:
    frame = churn_frame()
    result = mlserve.train(
        frame, name="churn", target="churned", estimator="random_forest", alias="production"
    )
    assert (result.version.name, result.version.version) == ("churn", 1)
    assert result.version.aliases == ("production",)
    assert result.version.params["estimator"] == "random_forest"
    assert result.rows_train + result.rows_test == len(frame.drop_duplicates())
    assert 0.5 < result.metrics["accuracy"] <= 1.0
    assert result.run is not None
    assert result.run.version == 1
    # The frame itself is trained on: the run names it, not a file that no longer exists.
    assert result.run.data_path == f"a DataFrame of {len(frame)} rows"

    model = mlserve.load("churn")  # the production alias
    predictions = model.predict(frame)
    assert set(predictions) <= {"no", "yes"}
    assert (predictions == frame["churned"]).mean() > 0.8  # it learned the training rows


def test_train_on_a_csv_file_as_the_cli_does(project: Path) -> None:
    frame = price_frame()
    frame["id"] = range(len(frame))
    frame.to_csv(project / "prices.csv", index=False)

    result = mlserve.train(
        project / "prices.csv", name="price", target="price", drop=["id"], seed=3
    )
    assert result.report.task == "regression"
    assert result.version.signature.feature_names == PRICE_FEATURES
    assert result.run is not None
    assert result.run.data_path == str(project / "prices.csv")
    assert result.metrics["rmse"] < result.baseline_metrics["rmse"]

    with pytest.raises(DatasetError, match="cannot be trained on"):
        mlserve.train(project / "prices.csv", name="price2", target="nothing")


# -- against a server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A running server with two registered models, and the models themselves."""

    url: str
    churn: Pipeline
    price: Ridge
    loaded_churn: mlserve.LoadedModel


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`mlserve serve` (with an API key) of a folder whose registry the SDK filled."""
    root = tmp_path_factory.mktemp("sdk-served")
    churn = fit_churn(churn_frame())
    price = fit_price(price_frame())
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("MLSERVE_"):
                patch.delenv(key)
        patch.chdir(root)  # the default registry, .mlserve in the folder, as the server's
        frame = churn_frame()
        mlserve.register(
            churn, name="churn", signature_from=frame, target="churned", alias="production"
        )
        mlserve.register(  # version 2: served beside it (versions: all), not by default
            fit_churn(frame, c=0.05), name="churn", signature_from=frame, target="churned"
        )
        mlserve.register(price, name="price", signature_from=price_frame(), target="price")
        loaded = mlserve.load("churn@production")
    env = {"MLSERVE_API_KEY": API_KEY, "MLSERVE_VERSIONS": "all"}
    with running_server(root, "churn", "price", env=env) as server:
        yield Served(server.url, churn, price, loaded)


def test_client_predictions_equal_the_model_s_own(served: Served) -> None:
    rows = churn_frame(rows=50, seed=11)
    with mlserve.Client(served.url, api_key=API_KEY) as client:
        assert client.ready()
        result = client.predict("churn", rows)
        assert list(result.columns) == ["prediction"]
        assert result.index.equals(rows.index)
        np.testing.assert_array_equal(
            result["prediction"].to_numpy(), served.churn.predict(rows[CHURN_FEATURES])
        )

        both = client.predict("churn", rows, outputs=["predict", "predict_proba"])
        assert list(both.columns) == ["prediction", "proba_no", "proba_yes"]
        np.testing.assert_allclose(
            both[["proba_no", "proba_yes"]].to_numpy(),
            served.churn.predict_proba(rows[CHURN_FEATURES]),
        )
        alone = client.predict("churn", rows, outputs="predict_proba")  # one name, not letters
        assert list(alone.columns) == ["proba_no", "proba_yes"]
        # pandas' categorical and string dtypes travel as the same BYTES tensors.
        typed = rows.astype({"plan": "category", "region": "string"})
        assert client.predict("churn", typed).equals(result)


def test_client_columns_are_named_as_batch_output_is() -> None:
    assert (PREDICTION_COLUMN, CLIENT_PROBA_PREFIX) == (PREDICTION, PROBA_PREFIX)


def test_client_predicts_numeric_models_and_chosen_versions(served: Served) -> None:
    rows = price_frame(rows=30, seed=9)
    with mlserve.Client(served.url, api_key=API_KEY) as client:
        result = client.predict("price", rows[PRICE_FEATURES])
        np.testing.assert_allclose(
            result["prediction"].to_numpy(), served.price.predict(rows[PRICE_FEATURES]), rtol=1e-12
        )
        churn_rows = churn_frame(rows=30, seed=4)
        first = client.predict("churn", churn_rows, version=1)
        np.testing.assert_array_equal(
            first["prediction"].to_numpy(), served.churn.predict(churn_rows[CHURN_FEATURES])
        )
        second = client.predict("churn", churn_rows, version="2", outputs=["predict_proba"])
        other = fit_churn(churn_frame(), c=0.05).predict_proba(churn_rows[CHURN_FEATURES])
        np.testing.assert_allclose(second[["proba_no", "proba_yes"]].to_numpy(), other)
        names = {(m["name"], str(m["version"])) for m in client.models()}
        assert {("churn", "1"), ("churn", "2"), ("price", "1")} <= names


def test_unknown_models_and_versions_are_not_found(served: Served) -> None:
    rows = churn_frame(rows=3)
    headers = {"authorization": f"Bearer {API_KEY}"}
    said = httpx.get(f"{served.url}/v2/models/nothing", headers=headers, timeout=30)
    assert said.status_code == 404
    with mlserve.Client(served.url, api_key=API_KEY) as client:
        with pytest.raises(NotFound) as raised:
            client.predict("nothing", rows)
        assert str(raised.value) == said.json()["error"]
        with pytest.raises(NotFound, match="9"):
            client.predict("churn", rows, version=9)


def test_a_refused_row_raises_the_server_s_reason_as_load_does(served: Served) -> None:
    rows = churn_frame(rows=6, seed=2)
    rows = rows.astype({"monthly": object})
    rows.loc[2, "monthly"] = "abc"
    with mlserve.Client(served.url, api_key=API_KEY) as client:
        with pytest.raises(InvalidInput) as remote:
            client.predict("churn", rows)
        with pytest.raises(InvalidInput) as local:
            served.loaded_churn.predict(rows)
        assert str(remote.value) == "row 2: feature 'monthly' is not a number: 'abc'"
        assert str(local.value) == str(remote.value)

        unknown = churn_frame(rows=4, seed=2)
        unknown.loc[1, "region"] = "mars"
        with pytest.raises(InvalidInput, match=r"^row 1: feature 'region' has an unknown"):
            client.predict("churn", unknown)
        with pytest.raises(InvalidInput, match=r"missing feature column\(s\): 'tenure'"):
            client.predict("churn", churn_frame(rows=4).drop(columns=["tenure"]))
        with pytest.raises(InvalidInput, match="predict_probability"):
            client.predict("churn", churn_frame(rows=4), outputs=["predict_probability"])


def test_api_keys_are_sent_and_refusals_raised(served: Served) -> None:
    rows = churn_frame(rows=3)
    with mlserve.Client(served.url) as client, pytest.raises(Unauthorized, match="API key"):
        client.predict("churn", rows)
    with mlserve.Client(served.url, api_key="wrong") as client:
        with pytest.raises(Forbidden, match="not valid"):
            client.predict("churn", rows)
        assert client.ready()  # health stays open without a key


def test_import_mlserve_loads_neither_pandas_nor_scikit_learn() -> None:
    code = (
        "import sys, mlserve\n"
        "assert 'pandas' not in sys.modules and 'sklearn' not in sys.modules, 'heavy'\n"
        "assert callable(mlserve.register) and 'sklearn' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=server_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    client_only = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, mlserve; mlserve.Client; assert 'sklearn' not in sys.modules",
        ],
        env=server_environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert client_only.returncode == 0, client_only.stderr
