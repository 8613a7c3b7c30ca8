"""Small real models of every framework mlserve serves, trained on data made here, each with its
framework's own answers on a fixed set of rows (what every door of mlserve must give back).

A factory writes the file or folder to register and computes ``predict`` (and ``predict_proba``
for a classifier) on ``TEST_ROWS`` with the framework's own API, loading what it wrote where
the framework can (a booster file, an ONNX file, a custom model's code, an MLflow folder), so
the expected answers are what the registered artifact itself gives.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FEATURES = ["age", "income", "balance", "visits", "score", "ratio"]
"""Six numeric features, named so that registration must carry the data's names (not f0..f5)."""
TARGET = "label"
TRAIN_ROWS = 400
TEST_COUNT = 24


@dataclass(frozen=True)
class Made:
    """A trained model written to disk, and its framework's own answers on the test rows."""

    framework: str
    """The framework registration should judge from the path (and serve it with)."""
    path: Path
    """The file or folder to register."""
    training: Path
    """CSV of the training rows with the target column, for --signature-from."""
    predict: np.ndarray
    predict_proba: np.ndarray | None
    """None for a regressor, or a model that gives no probabilities."""
    classes: list[Any]
    """Class labels in probability column order (empty for a regressor)."""
    deterministic: bool
    """True when the framework's numbers for a row are the same bits however the rows reach
    it (one call for all, a call per row, C or Fortran order). A matrix product through BLAS
    is not: its blocking, and so its last bits, depend on the rows' count and layout."""

    @property
    def is_classifier(self) -> bool:
        """True when the model predicts classes."""
        return bool(self.classes)


def _three_decimals(values: np.ndarray) -> np.ndarray:
    """Rounded so the values survive CSV text exactly whatever parser reads it."""
    return np.round(values, 3)


def classification_data() -> tuple[pd.DataFrame, np.ndarray]:
    """Training rows (six features) and 0/1 labels."""
    x, y = make_classification(
        n_samples=TRAIN_ROWS,
        n_features=len(FEATURES),
        n_informative=4,
        n_redundant=1,
        random_state=0,
    )
    return pd.DataFrame(_three_decimals(x), columns=FEATURES), y.astype(np.int64)


def regression_data() -> tuple[pd.DataFrame, np.ndarray]:
    """Training rows (six features) and a numeric target."""
    x, y = make_regression(
        n_samples=TRAIN_ROWS, n_features=len(FEATURES), n_informative=5, noise=2.0, random_state=1
    )
    return pd.DataFrame(_three_decimals(x), columns=FEATURES), _three_decimals(y)


def test_rows() -> pd.DataFrame:
    """The fixed rows every door is asked about: unseen in training, on the training scale."""
    rng = np.random.default_rng(42)
    values = rng.normal(scale=1.5, size=(TEST_COUNT, len(FEATURES)))
    return pd.DataFrame(_three_decimals(values), columns=FEATURES)


TEST_ROWS = test_rows()


def _write_training(folder: Path, frame: pd.DataFrame, target: np.ndarray) -> Path:
    path = folder / "training.csv"
    frame.assign(**{TARGET: target}).to_csv(path, index=False)
    return path


Answer = Callable[[pd.DataFrame], Any]
"""The framework's own predict (or predict_proba) of a frame of the test rows."""


def _layouts(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The same rows as differently laid out frames."""
    values = frame.to_numpy(dtype=np.float64)
    return [
        pd.DataFrame(np.ascontiguousarray(values), columns=frame.columns),
        pd.DataFrame(np.asfortranarray(values), columns=frame.columns),
    ]


def _stable(answer: Answer, expected: np.ndarray) -> bool:
    """True when ``answer`` gives ``expected`` bit for bit whatever the layout, and row by row."""
    tries = [np.asarray(answer(f)) for f in _layouts(TEST_ROWS)]
    tries.append(
        np.concatenate([np.asarray(answer(TEST_ROWS.iloc[[i]])) for i in range(TEST_COUNT)])
    )
    return all(t.dtype == expected.dtype and np.array_equal(t, expected) for t in tries)


def _made(
    framework: str,
    path: Path,
    training: Path,
    classes: list[Any],
    predict: Answer,
    predict_proba: Answer | None = None,
) -> Made:
    """The answers of ``predict`` (and ``predict_proba``) on the test rows, and whether they
    are deterministic."""
    predicted = np.asarray(predict(TEST_ROWS))
    proba = None if predict_proba is None else np.asarray(predict_proba(TEST_ROWS))
    numbers = [(predicted, predict)] if predicted.dtype.kind == "f" else []
    if proba is not None and predict_proba is not None:
        numbers.append((proba, predict_proba))
    deterministic = all(_stable(answer, values) for values, answer in numbers)
    return Made(framework, path, training, predicted, proba, classes, deterministic)


def _binary_proba(positive: np.ndarray) -> np.ndarray:
    """``[1 - p, p]`` as the frameworks' scikit-learn wrappers stack a binary probability."""
    return np.vstack((1.0 - positive, positive)).transpose()


# -- scikit-learn ---------------------------------------------------------------------------------


def _logistic_pipeline(frame: pd.DataFrame, y: np.ndarray) -> Pipeline:
    model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(C=0.5))])
    return model.fit(frame, y)


def make_sklearn(folder: Path) -> Made:
    """A StandardScaler + LogisticRegression pipeline fitted on a frame, saved with joblib."""
    frame, y = classification_data()
    model = _logistic_pipeline(frame, y)
    path = folder / "model.joblib"
    joblib.dump(model, path)
    loaded = joblib.load(path)
    return _made(
        "sklearn",
        path,
        _write_training(folder, frame, y),
        loaded.classes_.tolist(),
        loaded.predict,
        loaded.predict_proba,
    )


# -- XGBoost --------------------------------------------------------------------------------------


def _xgb_classifier(frame: pd.DataFrame, y: np.ndarray) -> Any:
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=25, max_depth=3, learning_rate=0.3, n_jobs=1)
    return model.fit(frame, y)


def _xgb_booster_file(folder: Path, suffix: str) -> Made:
    import xgboost as xgb

    frame, y = classification_data()
    path = folder / f"model{suffix}"
    _xgb_classifier(frame, y).get_booster().save_model(path)
    # XGBoost's own reading of the booster file: its classifier loads a bare booster.
    loaded = xgb.XGBClassifier()
    loaded.load_model(path)
    return _made(
        "xgboost",
        path,
        _write_training(folder, frame, y),
        [0, 1],
        loaded.predict,
        loaded.predict_proba,
    )


def make_xgboost_json(folder: Path) -> Made:
    """An XGBoost classifier's booster saved as JSON."""
    return _xgb_booster_file(folder, ".json")


def make_xgboost_ubj(folder: Path) -> Made:
    """An XGBoost classifier's booster saved as UBJSON."""
    return _xgb_booster_file(folder, ".ubj")


def make_xgboost_joblib(folder: Path) -> Made:
    """A fitted XGBClassifier pickled with joblib (served by the XGBoost runtime)."""
    frame, y = classification_data()
    path = folder / "model.joblib"
    joblib.dump(_xgb_classifier(frame, y), path)
    loaded = joblib.load(path)
    return _made(
        "xgboost",
        path,
        _write_training(folder, frame, y),
        loaded.classes_.tolist(),
        loaded.predict,
        loaded.predict_proba,
    )


def make_xgboost_regressor(folder: Path) -> Made:
    """An XGBoost regressor's booster saved as JSON (its answers are float32)."""
    import xgboost as xgb

    frame, y = regression_data()
    model = xgb.XGBRegressor(n_estimators=30, max_depth=3, n_jobs=1).fit(frame, y)
    path = folder / "model.json"
    model.get_booster().save_model(path)
    booster = xgb.Booster(model_file=path)
    return _made(
        "xgboost",
        path,
        _write_training(folder, frame, y),
        [],
        lambda rows: booster.predict(xgb.DMatrix(rows)),
    )


# -- LightGBM -------------------------------------------------------------------------------------


def _lgbm_classifier(frame: pd.DataFrame, y: np.ndarray) -> Any:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=25, num_leaves=8, n_jobs=1, verbose=-1)
    return model.fit(frame, y)


def make_lightgbm_txt(folder: Path) -> Made:
    """A LightGBM classifier's booster saved as text."""
    import lightgbm as lgb

    frame, y = classification_data()
    path = folder / "model.txt"
    _lgbm_classifier(frame, y).booster_.save_model(path)
    # LightGBM's own reading of the file: the booster's probability of class 1, stacked as its
    # scikit-learn classifier stacks it, and that classifier's argmax for the class.
    booster = lgb.Booster(model_file=str(path))

    def proba(rows: pd.DataFrame) -> np.ndarray:
        return _binary_proba(np.asarray(booster.predict(rows)))

    return _made(
        "lightgbm",
        path,
        _write_training(folder, frame, y),
        [0, 1],
        lambda rows: np.argmax(proba(rows), axis=1).astype(np.int64),
        proba,
    )


def make_lightgbm_joblib(folder: Path) -> Made:
    """A fitted LGBMClassifier pickled with joblib (served by the LightGBM runtime)."""
    frame, y = classification_data()
    path = folder / "model.joblib"
    joblib.dump(_lgbm_classifier(frame, y), path)
    loaded = joblib.load(path)
    return _made(
        "lightgbm",
        path,
        _write_training(folder, frame, y),
        loaded.classes_.tolist(),
        loaded.predict,
        loaded.predict_proba,
    )


# -- ONNX -----------------------------------------------------------------------------------------


def make_onnx(folder: Path) -> Made:
    """A scikit-learn pipeline converted by skl2onnx (float32 input, no ZipMap)."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    frame, y = classification_data()
    model = _logistic_pipeline(frame, y)
    onnx_model = to_onnx(
        model,
        initial_types=[("input", FloatTensorType([None, len(FEATURES)]))],
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = folder / "model.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(rows: pd.DataFrame, output: int) -> np.ndarray:
        feed = {"input": rows.to_numpy(dtype=np.float32)}
        return np.asarray(session.run(None, feed)[output])

    return _made(
        "onnx",
        path,
        _write_training(folder, frame, y),
        model.classes_.tolist(),
        lambda rows: run(rows, 0),
        lambda rows: run(rows, 1),
    )


# -- custom Python model --------------------------------------------------------------------------

PYTHON_MODEL = textwrap.dedent(
    '''
    """A custom model: log-scaled income and a clipped ratio before a joblib'd classifier."""

    from pathlib import Path

    import joblib
    import numpy as np
    import pandas as pd

    FEATURES = {features!r}


    class Model:
        classes = [0, 1]

        def load(self, folder):
            self._estimator = joblib.load(Path(folder) / "estimator.joblib")

        def _prepared(self, frame):
            frame = pd.DataFrame(frame)[FEATURES].astype("float64")
            frame["income"] = np.sign(frame["income"]) * np.log1p(frame["income"].abs())
            frame["ratio"] = frame["ratio"].clip(-2.0, 2.0)
            return frame.to_numpy()

        def predict(self, frame):
            return self._estimator.predict(self._prepared(frame))

        def predict_proba(self, frame):
            return self._estimator.predict_proba(self._prepared(frame))
    '''
).format(features=FEATURES)


def _load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_python(folder: Path) -> Made:
    """A folder with model.py wrapping a joblib'd LogisticRegression after pre-processing."""
    frame, y = classification_data()
    model_folder = folder / "custom-model"
    model_folder.mkdir()
    (model_folder / "model.py").write_text(PYTHON_MODEL, encoding="utf-8")
    code = _load_module(model_folder / "model.py", f"custom_model_{id(folder)}")
    estimator = LogisticRegression(C=0.5).fit(code.Model()._prepared(frame), y)
    joblib.dump(estimator, model_folder / "estimator.joblib")
    model = code.Model()
    model.load(model_folder)
    return _made(
        "python",
        model_folder,
        _write_training(folder, frame, y),
        list(model.classes),
        model.predict,
        model.predict_proba,
    )


# -- MLflow pyfunc --------------------------------------------------------------------------------

MLFLOW_MODEL_CODE = textwrap.dedent(
    '''
    """An MLflow pyfunc (models from code): a joblib'd pipeline's classes for a frame."""

    import joblib
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.pyfunc import PythonModel


    class Classes(PythonModel):
        def load_context(self, context):
            self._estimator = joblib.load(context.artifacts["estimator"])

        def predict(self, context, model_input: pd.DataFrame, params=None):
            frame = pd.DataFrame(model_input)[{features!r}].astype("float64")
            return np.asarray(self._estimator.predict(frame))


    mlflow.models.set_model(Classes())
    '''
).format(features=FEATURES)


def make_mlflow(folder: Path) -> Made:
    """An MLflow pyfunc folder (mlflow.pyfunc.save_model) answering a pipeline's classes."""
    with warnings.catch_warnings():
        # Importing MLflow warns about type hints of its own (agent request types).
        warnings.filterwarnings("ignore", ".*Any type hint is inferred as AnyType", UserWarning)
        import mlflow.pyfunc
        from mlflow.models import infer_signature

    frame, y = classification_data()
    estimator_path = folder / "estimator.joblib"
    joblib.dump(_logistic_pipeline(frame, y), estimator_path)
    code_path = folder / "mlflow_model_code.py"
    code_path.write_text(MLFLOW_MODEL_CODE, encoding="utf-8")
    model_folder = folder / "mlflow-model"
    mlflow.pyfunc.save_model(
        path=str(model_folder),
        python_model=str(code_path),
        artifacts={"estimator": str(estimator_path)},
        signature=infer_signature(frame, y),
        input_example=frame.head(3),
        pip_requirements=["scikit-learn", "pandas"],
    )
    loaded = mlflow.pyfunc.load_model(str(model_folder))
    # A pyfunc answers predict only: no probabilities, no class list.
    return _made("mlflow", model_folder, _write_training(folder, frame, y), [], loaded.predict)


FACTORIES: dict[str, Callable[[Path], Made]] = {
    "sklearn": make_sklearn,
    "xgboost-json": make_xgboost_json,
    "xgboost-ubj": make_xgboost_ubj,
    "xgboost-joblib": make_xgboost_joblib,
    "xgboost-regressor": make_xgboost_regressor,
    "lightgbm-txt": make_lightgbm_txt,
    "lightgbm-joblib": make_lightgbm_joblib,
    "onnx": make_onnx,
    "python": make_python,
    "mlflow": make_mlflow,
}
"""Model name (as registered and served) -> its factory."""


def make_all(root: Path) -> dict[str, Made]:
    """Every factory's model, each in its own folder under ``root``."""
    made = {}
    for name, factory in FACTORIES.items():
        folder = root / name
        folder.mkdir(parents=True)
        made[name] = factory(folder)
    return made


if __name__ == "__main__":  # a quick look: python framework_models.py FOLDER
    for key, value in make_all(Path(sys.argv[1])).items():
        print(key, value.framework, value.predict[:4], value.classes, value.deterministic)
