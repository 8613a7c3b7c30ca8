"""`mlserve import`: models saved with MLflow's own API, imported by the real command, answer
as MLflow's pyfunc loader answers."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from cli_harness import Result, assert_ok, assert_one_line_error, open_registry, run_cli
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

with warnings.catch_warnings():
    # mlflow.pyfunc warns, as it is imported, about type hints of its own agent classes.
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred", category=UserWarning)
    import mlflow
    import mlflow.lightgbm
    import mlflow.pyfunc
    import mlflow.sklearn
    import mlflow.xgboost
    from mlflow.models import infer_signature

pytestmark = pytest.mark.slow

FEATURES = ["size", "rooms", "city"]

PYFUNC_CODE = """
import mlflow
import pandas as pd


class Scorer(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.Series:
        return model_input["size"] * 2 + model_input["rooms"] + model_input["city"].str.len()


mlflow.models.set_model(Scorer())
"""
"""A pyfunc model from code (MLflow's "models from code"): no flavour mlserve serves natively."""


@contextmanager
def mlflow_quietly() -> Iterator[None]:
    """Silence what MLflow's own API warns while these tests save and load models, and only that."""
    with warnings.catch_warnings():
        # infer_signature on an integer column (rooms): a hint about missing values.
        warnings.filterwarnings(
            "ignore", message="Hint: Inferred schema contains integer", category=UserWarning
        )
        # MLflow's SQLAlchemy tracking store, on SQLAlchemy 2.1.
        warnings.filterwarnings(
            "ignore", message=".*``noload`` loader strategy is deprecated", category=Warning
        )
        yield


@pytest.fixture(scope="module")
def houses() -> pd.DataFrame:
    """40 made-up houses: size, rooms, city, a price and a dear/cheap label."""
    rng = np.random.default_rng(11)
    frame = pd.DataFrame(
        {
            "size": rng.uniform(40, 200, 40).round(1),
            "rooms": rng.integers(1, 6, 40),
            "city": rng.choice(["oslo", "bergen", "tromso"], 40),
        }
    )
    frame["price"] = frame["size"] * 3 + frame["rooms"] * 20 + (frame["city"] == "oslo") * 150
    frame["label"] = np.where(frame["price"] > frame["price"].median(), "dear", "cheap")
    return frame


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose embedded registry (.mlserve) every test here imports into."""
    return tmp_path_factory.mktemp("mlflow-import")


@pytest.fixture(scope="module")
def rows_file(project: Path, houses: pd.DataFrame) -> Path:
    """12 houses to predict, with their price and label columns (ignored by the models)."""
    path = project / "rows.csv"
    houses.head(12).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def classifier(houses: pd.DataFrame) -> Pipeline:
    """City one-hot encoded, then a logistic regression of the label."""
    encode = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["city"])],
        remainder="passthrough",
    )
    model = Pipeline([("encode", encode), ("classify", LogisticRegression(max_iter=5000))])
    return model.fit(houses[FEATURES], houses["label"])


@pytest.fixture(scope="module")
def sklearn_folder(
    tmp_path_factory: pytest.TempPathFactory, houses: pd.DataFrame, classifier: Pipeline
) -> Path:
    """``classifier`` saved by mlflow.sklearn with a signature and a 5-row input example."""
    folder = tmp_path_factory.mktemp("mlflow") / "sklearn-model"
    x = houses[FEATURES]
    with mlflow_quietly():
        signature = infer_signature(x, classifier.predict(x))
        mlflow.sklearn.save_model(classifier, folder, signature=signature, input_example=x.head(5))
    return folder


def numeric_signature(houses: pd.DataFrame) -> Any:
    """The MLflow signature of a price model on size and rooms, both double."""
    x = houses[["size", "rooms"]].astype(np.float64)
    return infer_signature(x, houses["price"].astype(np.float64))


@pytest.fixture(scope="module")
def xgboost_folder(tmp_path_factory: pytest.TempPathFactory, houses: pd.DataFrame) -> Path:
    """An XGBoost regressor of the price, saved by mlflow.xgboost."""
    x = houses[["size", "rooms"]].astype(np.float64)
    model = xgboost.XGBRegressor(n_estimators=8, max_depth=2).fit(x, houses["price"])
    folder = tmp_path_factory.mktemp("mlflow") / "xgboost-model"
    mlflow.xgboost.save_model(model, folder, signature=numeric_signature(houses))
    return folder


@pytest.fixture(scope="module")
def lightgbm_folder(tmp_path_factory: pytest.TempPathFactory, houses: pd.DataFrame) -> Path:
    """A LightGBM booster of the price, saved by mlflow.lightgbm (booster text, model.lgb)."""
    x = houses[["size", "rooms"]].astype(np.float64)
    params = {"objective": "regression", "num_leaves": 4, "min_data_in_leaf": 3, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(x, houses["price"]), num_boost_round=8)
    folder = tmp_path_factory.mktemp("mlflow") / "lightgbm-model"
    mlflow.lightgbm.save_model(booster, folder, signature=numeric_signature(houses))
    return folder


@pytest.fixture(scope="module")
def pyfunc_folder(tmp_path_factory: pytest.TempPathFactory, houses: pd.DataFrame) -> Path:
    """PYFUNC_CODE saved by mlflow.pyfunc with a signature (rooms a long, city a string) and a
    4-row input example."""
    scratch = tmp_path_factory.mktemp("mlflow")
    code = scratch / "scorer.py"
    code.write_text(PYFUNC_CODE)
    x = houses[FEATURES]
    folder = scratch / "pyfunc-model"
    with mlflow_quietly():
        signature = infer_signature(x, x["size"] * 2.0)
        mlflow.pyfunc.save_model(
            folder, python_model=str(code), signature=signature, input_example=x.head(4)
        )
    return folder


def mlflow_answers(folder: Path | str, rows: pd.DataFrame) -> np.ndarray:
    """What MLflow's own pyfunc loader predicts for ``rows``."""
    with mlflow_quietly():
        model = mlflow.pyfunc.load_model(str(folder))
        return np.asarray(model.predict(rows))


def predicted(project: Path, ref: str, rows: Path, *extra: str) -> pd.DataFrame:
    """`mlserve predict REF ROWS --format json`, read back."""
    result = run_cli("predict", ref, str(rows), "--format", "json", *extra, cwd=project)
    assert_ok(result)
    return pd.DataFrame(json.loads(result.stdout))


def imported(project: Path, source: str | Path, name: str, *extra: str, **env: str) -> Result:
    """`mlserve import SOURCE --name NAME`, which must succeed."""
    result = run_cli("import", str(source), "--name", name, *extra, cwd=project, env=env)
    assert_ok(result)
    return result


def test_sklearn_flavour_is_served_natively_with_the_mlmodel_signature(
    project: Path, sklearn_folder: Path, rows_file: Path, houses: pd.DataFrame
) -> None:
    result = imported(project, sklearn_folder, "houses-sk", "--alias", "production")
    assert "Imported houses-sk:1 as production" in result.stdout
    assert "sklearn flavour, served by the sklearn runtime, 3 features" in result.stdout

    with open_registry(project) as store:
        version = store.get_version("houses-sk", 1)
    assert version.framework == "sklearn"
    assert version.model_file.endswith(".skops")  # the inner model file, not the folder
    signature = version.signature
    assert signature.feature_names == FEATURES
    assert [f.kind for f in signature.inputs] == ["numeric", "numeric", "categorical"]
    assert signature.task == "classification"
    assert signature.classes == ("cheap", "dear")
    assert signature.outputs == ("predict", "predict_proba")
    assert version.tags == {"mlflow_source": str(sklearn_folder), "mlflow_flavor": "sklearn"}
    # No data given: the 5-row input example is the reference profile.
    assert version.reference_profile is not None
    assert version.reference_profile["rows"] == 5

    scores = predicted(project, "houses-sk", rows_file, "--proba")
    expected = mlflow_answers(sklearn_folder, houses.head(12)[FEATURES])
    assert list(scores["prediction"]) == list(expected)
    assert {"proba_cheap", "proba_dear"} <= set(scores.columns)


def test_signature_from_data_gives_categories_and_the_reference_profile(
    project: Path, sklearn_folder: Path, houses: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "train.csv"
    houses.drop(columns=["price"]).to_csv(data, index=False)
    imported(
        project,
        sklearn_folder,
        "houses-sk-data",
        "--signature-from",
        str(data),
        "--target",
        "label",
    )
    with open_registry(project) as store:
        version = store.get_version("houses-sk-data", 1)
    city = version.signature.inputs[2]
    assert (city.name, city.kind, city.categories) == (
        "city",
        "categorical",
        ("bergen", "oslo", "tromso"),
    )
    assert version.reference_profile is not None
    assert version.reference_profile["rows"] == 40


def test_safe_loading_imports_a_skops_sklearn_model_but_refuses_pyfunc(
    project: Path, sklearn_folder: Path, pyfunc_folder: Path
) -> None:
    safe = run_cli(
        "--safe-loading", "import", str(sklearn_folder), "--name", "houses-safe", cwd=project
    )
    assert_ok(safe)
    refused = run_cli(
        "--safe-loading", "import", str(pyfunc_folder), "--name", "houses-unsafe", cwd=project
    )
    assert_one_line_error(refused, 5, "safe loading refuses")


def test_xgboost_flavour_is_served_natively(
    project: Path, xgboost_folder: Path, rows_file: Path, houses: pd.DataFrame
) -> None:
    pytest.importorskip("mlserve.runtimes.xgboost", reason="the XGBoost runtime is not written yet")
    result = imported(project, xgboost_folder, "houses-xgb")
    assert "xgboost flavour, served by the xgboost runtime, 2 features" in result.stdout
    with open_registry(project) as store:
        version = store.get_version("houses-xgb", 1)
    assert version.framework == "xgboost"
    assert version.signature.feature_names == ["size", "rooms"]
    assert version.tags["mlflow_flavor"] == "xgboost"

    scores = predicted(project, "houses-xgb", rows_file)
    expected = mlflow_answers(xgboost_folder, houses.head(12)[["size", "rooms"]].astype(float))
    np.testing.assert_allclose(scores["prediction"], expected, rtol=1e-6)


def test_lightgbm_flavour_is_served_natively(
    project: Path, lightgbm_folder: Path, rows_file: Path, houses: pd.DataFrame
) -> None:
    pytest.importorskip("mlserve.runtimes.lightgbm", reason="the LightGBM runtime is not written")
    result = imported(project, lightgbm_folder, "houses-lgb")
    assert "lightgbm flavour, served by the lightgbm runtime, 2 features" in result.stdout
    with open_registry(project) as store:
        version = store.get_version("houses-lgb", 1)
    assert version.framework == "lightgbm"
    assert version.model_file.endswith(".lgb")

    scores = predicted(project, "houses-lgb", rows_file)
    expected = mlflow_answers(lightgbm_folder, houses.head(12)[["size", "rooms"]].astype(float))
    np.testing.assert_allclose(scores["prediction"], expected, rtol=1e-9)


def test_lightgbm_scikit_learn_model_saved_as_skops_is_served_by_scikit_learn(
    project: Path, tmp_path: Path, rows_file: Path, houses: pd.DataFrame
) -> None:
    x = houses[["size", "rooms"]].astype(np.float64)
    model = lightgbm.LGBMClassifier(n_estimators=8, min_child_samples=3, verbose=-1)
    model.fit(x, houses["label"])
    folder = tmp_path / "lgbm-classifier"
    with mlflow_quietly():
        mlflow.lightgbm.save_model(model, folder, signature=infer_signature(x, model.predict(x)))
    result = imported(project, folder, "houses-lgbm-sk")
    assert "lightgbm flavour, served by the sklearn runtime, 2 features" in result.stdout
    with open_registry(project) as store:
        version = store.get_version("houses-lgbm-sk", 1)
    assert version.model_file.endswith(".skops")
    assert version.signature.classes == ("cheap", "dear")

    scores = predicted(project, "houses-lgbm-sk", rows_file)
    expected = mlflow_answers(folder, houses.head(12)[["size", "rooms"]].astype(float))
    assert list(scores["prediction"]) == list(expected)


def test_any_other_flavour_is_served_through_pyfunc_by_predict_and_batch(
    project: Path, pyfunc_folder: Path, rows_file: Path, houses: pd.DataFrame
) -> None:
    result = imported(project, pyfunc_folder, "houses-pyfunc")
    assert "python_function flavour, served by the mlflow runtime, 3 features" in result.stdout
    with open_registry(project) as store:
        version = store.get_version("houses-pyfunc", 1)
    assert version.framework == "mlflow"
    assert version.signature.feature_names == FEATURES
    assert version.signature.task == "regression"
    assert version.tags["mlflow_flavor"] == "python_function"

    rows = houses.head(12)
    expected = mlflow_answers(pyfunc_folder, rows[FEATURES])
    np.testing.assert_allclose(expected, rows["size"] * 2 + rows["rooms"] + rows["city"].str.len())
    scores = predicted(project, "houses-pyfunc", rows_file)
    np.testing.assert_allclose(scores["prediction"], expected, rtol=1e-12)

    # rooms is a long column in the MLmodel: a fraction is refused, naming the row and value.
    odd = project / "odd-rooms.csv"
    houses.head(3).assign(rooms=[2.0, 2.5, 3.0]).to_csv(odd, index=False)
    refused = run_cli("predict", "houses-pyfunc", str(odd), cwd=project)
    assert_one_line_error(refused, 4, "feature 'rooms' takes long values, not 2.5")

    out = project / "pyfunc-scores.csv"
    batch = run_cli("batch", "houses-pyfunc", str(rows_file), str(out), cwd=project)
    assert_ok(batch)
    np.testing.assert_allclose(pd.read_csv(out)["prediction"], expected, rtol=1e-12)


@pytest.fixture(scope="module")
def tracking_uri(
    tmp_path_factory: pytest.TempPathFactory, houses: pd.DataFrame, classifier: Pipeline
) -> tuple[str, str]:
    """A real local MLflow tracking store (SQLite, with its model registry) holding
    ``classifier`` registered as model ``houses`` version 1: the tracking URI and the run id."""
    folder = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch, mlflow_quietly():
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)  # the default experiment's artifacts would go to ./mlruns
        experiment = mlflow.create_experiment("houses", (folder / "artifacts").as_uri())
        x = houses[FEATURES]
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.sklearn.log_model(
                classifier,
                name="model",
                signature=infer_signature(x, classifier.predict(x)),
                input_example=x.head(3),
                registered_model_name="houses",
            )
    return uri, run.info.run_id


def test_models_uri_is_fetched_from_the_tracking_server(
    project: Path, tracking_uri: tuple[str, str], rows_file: Path, houses: pd.DataFrame
) -> None:
    uri, run_id = tracking_uri
    result = imported(project, "models:/houses/1", "houses-registry", MLFLOW_TRACKING_URI=uri)
    assert "Imported houses-registry:1 from models:/houses/1 (sklearn flavour" in result.stdout
    with open_registry(project) as store:
        version = store.get_version("houses-registry", 1)
    assert version.framework == "sklearn"
    assert version.tags == {
        "mlflow_source": "models:/houses/1",
        "mlflow_flavor": "sklearn",
        "mlflow_run_id": run_id,
    }
    assert version.reference_profile is not None
    assert version.reference_profile["rows"] == 3

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        expected = mlflow_answers("models:/houses/1", houses.head(12)[FEATURES])
    assert list(predicted(project, "houses-registry", rows_file)["prediction"]) == list(expected)

    missing = run_cli(
        "import",
        "models:/houses/7",
        "--name",
        "nope",
        cwd=project,
        env={"MLFLOW_TRACKING_URI": uri},
    )
    assert_one_line_error(missing, 3, "models:/houses/7")


def test_a_folder_without_mlmodel_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"not a model")
    refused = run_cli("import", str(tmp_path), "--name", "nothing", cwd=project)
    assert_one_line_error(refused, 4, "is not an MLflow model folder (it has no MLmodel file)")
    unknown = run_cli("import", "no/such/folder", "--name", "nothing", cwd=project)
    assert_one_line_error(unknown, 4, "no such folder, nor an MLflow URI")


def test_without_mlflow_installed_the_error_names_the_extra(
    project: Path, sklearn_folder: Path, tmp_path: Path
) -> None:
    hidden = tmp_path / "hide-mlflow" / "mlflow"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('mlflow is hidden by this test')\n")
    result = run_cli(
        "import",
        str(sklearn_folder),
        "--name",
        "no-mlflow",
        cwd=project,
        env={"PYTHONPATH": str(hidden.parent)},
    )
    assert_one_line_error(result, 6, "pip install 'mlserve[mlflow]'")
