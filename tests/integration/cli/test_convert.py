"""`mlserve convert REF --to onnx`, run as the real command against an embedded registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from cli_harness import (
    TIMEOUT_S,
    Call,
    assert_ok,
    assert_one_line_error,
    cli_env,
    open_registry,
    run_cli,
    run_cli_all,
)
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.semi_supervised import LabelSpreading

from mlserve.errors import InvalidInput
from mlserve.runtimes import SklearnRuntime, load_runtime, runtime_class
from mlserve.training.convert import check_parity, onnx_model_bytes, parity_rows
from mlserve.types import VersionManifest


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with made data: ``wine.csv`` (a class from two numbers and a colour,
    some values missing), ``price.csv`` (a number) and ``boost.csv`` (three numbers)."""
    folder = tmp_path_factory.mktemp("convert")
    rng = np.random.default_rng(0)
    rows = 300
    wine = pd.DataFrame(
        {
            "acidity": rng.normal(size=rows),
            "sugar": rng.normal(size=rows) * 10 + 50,
            "color": rng.choice(["red", "white", "rose"], size=rows),
        }
    )
    noise = rng.normal(size=rows) * 0.3
    wine["quality"] = np.where(
        wine["acidity"] + (wine["color"] == "red") + noise > 0.5, "good", "bad"
    )
    wine.loc[[3, 40], "acidity"] = np.nan
    wine.loc[[7, 80], "color"] = None
    wine.to_csv(folder / "wine.csv", index=False)
    price = wine[["acidity", "sugar", "color"]].copy()
    price["price"] = wine["sugar"] * 0.3 + (wine["color"] == "red") * 4 + noise
    price.dropna().to_csv(folder / "price.csv", index=False)
    boost = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["x1", "x2", "x3"])
    boost["label"] = (boost["x1"] + boost["x2"] * 0.5 + noise > 0).astype(int)
    boost.to_csv(folder / "boost.csv", index=False)
    return folder


def predictions(folder: Path, refs: list[str], data: str, *proba: str) -> list[pd.DataFrame]:
    """What `mlserve predict` writes for each of ``refs`` on ``data``."""
    calls = {
        ref: Call(["predict", ref, data, *proba, "-o", f"{ref.replace(':', '_')}.csv"], folder)
        for ref in refs
    }
    results = run_cli_all(calls)
    for result in results.values():
        assert_ok(result)
    return [pd.read_csv(folder / f"{ref.replace(':', '_')}.csv") for ref in refs]


def assert_same_answers(first: pd.DataFrame, second: pd.DataFrame) -> None:
    assert list(first.columns) == list(second.columns)
    assert first["prediction"].tolist() == second["prediction"].tolist()
    proba = [c for c in first.columns if c.startswith("proba_")]
    assert proba
    np.testing.assert_allclose(first[proba], second[proba], atol=1e-5, rtol=0)


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest"])
def test_trained_classifier_converts_and_predicts_like_its_source(
    folder: Path, estimator: str
) -> None:
    name = f"wine_{estimator}"
    assert_ok(
        run_cli(
            "train",
            "wine.csv",
            "--target",
            "quality",
            "--name",
            name,
            "--estimator",
            estimator,
            cwd=folder,
        )
    )

    result = run_cli("convert", f"{name}:1", "--to", "onnx", "--alias", "staging", cwd=folder)

    assert_ok(result)
    assert result.stdout.startswith(f"Converted {name}:1 to ONNX as {name}:2 (largest probability")
    assert "on 300 rows)." in result.stdout
    assert f"Alias staging now points at {name}:2." in result.stdout
    with open_registry(folder) as store:
        source, converted = store.get_version(name, 1), store.get_version(name, 2)
        assert store.resolve(f"{name}@staging").version == 2
    assert converted.framework == "onnx"
    assert converted.tags["converted_from"] == f"{name}:1"
    assert converted.tags["converted_by"] == "mlserve convert"
    assert f"{name}:1" in converted.description
    assert converted.signature == source.signature
    assert converted.reference_profile == source.reference_profile
    assert converted.data_fingerprint == source.data_fingerprint
    first, second = predictions(folder, [f"{name}:1", f"{name}:2"], "wine.csv", "--proba")
    assert_same_answers(first, second.assign(model_version=first["model_version"]))


def test_trained_regressor_converts_and_predicts_like_its_source(folder: Path) -> None:
    assert_ok(run_cli("train", "price.csv", "--target", "price", "--name", "price", cwd=folder))

    result = run_cli("convert", "price", "--to", "onnx", cwd=folder)

    assert_ok(result)
    assert "Converted price:1 to ONNX as price:2" in result.stdout
    assert "largest relative value difference" in result.stdout
    first, second = predictions(folder, ["price:1", "price:2"], "price.csv")
    np.testing.assert_allclose(first["prediction"], second["prediction"], rtol=1e-5)


def save_booster_models(folder: Path) -> dict[str, str]:
    """XGBoost and LightGBM models trained on boost.csv: name -> model file."""
    data = pd.read_csv(folder / "boost.csv")
    features, target = data.drop(columns="label"), data["label"]
    xgb_model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(features, target)
    lgb_model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(features, target)
    xgb_model.get_booster().save_model(folder / "xgb.json")
    lgb_model.booster_.save_model(folder / "lgb.txt")
    joblib.dump(xgb_model, folder / "xgb_sklearn.joblib")
    scaled = make_pipeline(StandardScaler(), lightgbm.LGBMClassifier(n_estimators=20, verbose=-1))
    joblib.dump(scaled.fit(features, target), folder / "lgb_pipeline.joblib")
    return {
        "xgb": "xgb.json",
        "lgb": "lgb.txt",
        "xgb_sklearn": "xgb_sklearn.joblib",
        "lgb_pipeline": "lgb_pipeline.joblib",
    }


@pytest.mark.slow
def test_xgboost_and_lightgbm_models_convert_with_parity(folder: Path) -> None:
    files = save_booster_models(folder)
    registered = run_cli_all(
        {
            name: Call(
                [
                    "register",
                    file,
                    "--name",
                    name,
                    "--signature-from",
                    "boost.csv",
                    "--target",
                    "label",
                ],
                folder,
            )
            for name, file in files.items()
        }
    )
    for result in registered.values():
        assert_ok(result)

    converted = run_cli_all(
        {name: Call(["convert", name, "--to", "onnx"], folder) for name in files}
    )

    for name, result in converted.items():
        assert_ok(result)
        assert f"Converted {name}:1 to ONNX as {name}:2" in result.stdout
    rows = pd.read_csv(folder / "boost.csv").drop(columns="label")
    with open_registry(folder) as store:
        sources = {name: store.get_version(name, 1) for name in files}
        for name in files:
            converted_version = store.get_version(name, 2)
            assert converted_version.framework == "onnx"
            source = load_runtime(store.local_folder(sources[name]))
            onnx_runtime = load_runtime(store.local_folder(converted_version), safe=True)
            labels, proba = source.predict_with_proba(rows)
            onnx_labels, onnx_proba = onnx_runtime.predict_with_proba(rows)
            np.testing.assert_array_equal(onnx_labels, labels)
            np.testing.assert_allclose(onnx_proba, proba, atol=1e-5, rtol=0)
    assert {name: v.framework for name, v in sources.items()} == {
        "xgb": "xgboost",
        "lgb": "lightgbm",
        "xgb_sklearn": "xgboost",
        "lgb_pipeline": "sklearn",
    }


def test_an_estimator_without_a_converter_is_named_in_one_line(folder: Path) -> None:
    data = pd.read_csv(folder / "boost.csv")
    model = make_pipeline(StandardScaler(), LabelSpreading()).fit(
        data.drop(columns="label"), data["label"]
    )
    joblib.dump(model, folder / "spread.joblib")
    assert_ok(
        run_cli(
            "register",
            "spread.joblib",
            "--name",
            "spread",
            "--signature-from",
            "boost.csv",
            "--target",
            "label",
            cwd=folder,
        )
    )

    result = run_cli("convert", "spread:1", "--to", "onnx", cwd=folder)

    assert_one_line_error(
        result, 4, "cannot convert step 'labelspreading' (LabelSpreading)", "no converter"
    )
    with open_registry(folder) as store:
        assert [v.version for v in store.list_versions("spread")] == [1]


def test_only_onnx_is_a_target(folder: Path) -> None:
    result = run_cli("convert", "anything", "--to", "pmml", cwd=folder)
    assert_one_line_error(result, 4, "cannot convert to 'pmml'")


def run_without(package: str, args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    """`mlserve ARGS` in a process where importing ``package`` fails, as when not installed."""
    script = (
        "import sys\n"
        f"sys.modules[{package!r}] = None\n"  # importing a module set to None raises ImportError
        "from mlserve.cli.main import run\n"
        f"sys.exit(run({args!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_missing_converter_package_is_one_line_naming_the_extra(folder: Path) -> None:
    assert_ok(run_cli("train", "wine.csv", "--target", "quality", "--name", "extra", cwd=folder))
    result = run_without("skl2onnx", ["convert", "extra:1", "--to", "onnx"], folder)
    assert_one_line_error(result, 6, "skl2onnx", "pip install 'mlserve[convert]'")
    with open_registry(folder) as store:
        assert [v.version for v in store.list_versions("extra")] == [1]


def test_missing_onnxruntime_is_one_line_naming_the_extra(folder: Path) -> None:
    data = pd.read_csv(folder / "boost.csv")
    model = LogisticRegression().fit(data.drop(columns="label").to_numpy(), data["label"])
    onx = to_onnx(model, data.drop(columns="label").to_numpy(dtype=np.float32)[:1])
    (folder / "plain.onnx").write_bytes(onx.SerializeToString())
    result = run_without("onnxruntime", ["register", "plain.onnx", "--name", "plain"], folder)
    assert_one_line_error(result, 6, "onnxruntime", "pip install 'mlserve[onnx]'")


def test_parity_check_refuses_a_model_that_answers_differently(folder: Path) -> None:
    data = pd.read_csv(folder / "boost.csv")
    features, target = data.drop(columns="label"), data["label"]
    one = LogisticRegression().fit(features, target)
    other = LogisticRegression().fit(features, 1 - target)
    joblib.dump(one, folder / "one.joblib")
    register = ["register", "one.joblib", "--name", "one", "--signature-from", "boost.csv"]
    assert_ok(run_cli(*register, "--target", "label", cwd=folder))
    with open_registry(folder) as store:
        source = store.get_version("one", 1)
    path = folder / "other" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(onnx_model_bytes(other, source.signature, list(other.classes_)))
    manifest = VersionManifest("one", 2, "onnx", path.name, "", source.signature, "")
    converted = runtime_class("onnx").load(path.parent, manifest, safe=True)
    original = SklearnRuntime(one, source.signature)
    rows = parity_rows(source)
    assert len(rows) == 300

    with pytest.raises(InvalidInput, match=r"row 0 of 300 is [01] for the original and [01] for"):
        check_parity(original, converted, rows)
    largest, compared = check_parity(original, original, rows)
    assert (largest, compared) == (0.0, "probability")
