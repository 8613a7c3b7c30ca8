"""Custom Python models: a folder's model.py around a real scikit-learn model, registered and
loaded the way every model is."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlserve.errors import ArtifactError, InvalidInput, UnsafeArtifact
from mlserve.registry import RegistryStore
from mlserve.runtimes import load_runtime, pack_folder
from mlserve.training.registration import Registration, register_model
from mlserve.types import MANIFEST_FILE, Feature, Signature, VersionManifest, file_sha256

REGRESSOR_CODE = """
    from pathlib import Path

    import joblib
    import numpy as np
    import pandas as pd

    from features import log_size


    class Model:
        feature_names = ["size", "rooms"]

        def load(self, folder: Path) -> None:
            self.inner = joblib.load(folder / "inner.joblib")

        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            rows = pd.DataFrame({"log_size": log_size(frame["size"]), "rooms": frame["rooms"]})
            return np.round(np.exp(self.inner.predict(rows)), 2)
"""
"""A model of log prices on log sizes: pre-processing takes the log, post-processing undoes it
and rounds to cents. The log lives in a sibling module, ``features.py``."""


@pytest.fixture(autouse=True)
def unpack_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder for unpacked model zips, so no test sees another's."""
    folder = tmp_path / "unpacked"
    monkeypatch.setenv("MLSERVE_UNPACK_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def houses() -> pd.DataFrame:
    """20 made-up houses: size, rooms and a price that grows with both."""
    rng = np.random.default_rng(7)
    size = rng.uniform(40, 200, 20)
    rooms = rng.integers(1, 6, 20).astype(float)
    price = np.exp(0.8 * np.log(size) + 0.1 * rooms + 3 + rng.normal(0, 0.05, 20))
    return pd.DataFrame({"size": size, "rooms": rooms, "price": price})


@pytest.fixture(scope="module")
def inner_regressor(houses: pd.DataFrame) -> LinearRegression:
    """A linear model of log price on log size and rooms."""
    x = pd.DataFrame({"log_size": np.log(houses["size"]), "rooms": houses["rooms"]})
    return LinearRegression().fit(x, np.log(houses["price"]))


def write_model(folder: Path, code: str, **files: str) -> Path:
    """A custom model folder: model.py holding ``code`` plus ``files`` by name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(code))
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return folder


@pytest.fixture
def house_model(tmp_path: Path, inner_regressor: LinearRegression) -> Path:
    """The REGRESSOR_CODE folder with its inner model and its ``features.py``."""
    folder = write_model(
        tmp_path / "house",
        REGRESSOR_CODE,
        features__py="import numpy as np\n\ndef log_size(size):\n    return np.log(size)\n",
    )
    joblib.dump(inner_regressor, folder / "inner.joblib")
    return folder


def expected_prices(model: LinearRegression, size: np.ndarray, rooms: np.ndarray) -> np.ndarray:
    """The answer worked out by hand from the inner model's coefficients."""
    log_price = model.intercept_ + model.coef_[0] * np.log(size) + model.coef_[1] * rooms
    return np.round(np.exp(log_price), 2)


def test_custom_model_answers_with_its_pre_and_post_processing(
    registry_store: RegistryStore,
    house_model: Path,
    inner_regressor: LinearRegression,
    houses: pd.DataFrame,
) -> None:
    version = register_model(registry_store, house_model, Registration(name="house"), safe=False)
    assert version.framework == "python"
    assert version.signature.feature_names == ["size", "rooms"]
    assert version.signature.task == "regression"

    folder = registry_store.local_folder(version)
    runtime = load_runtime(folder, expected_sha256=version.sha256)
    expected = expected_prices(inner_regressor, houses["size"].to_numpy(), houses["rooms"])

    matrix = houses[["size", "rooms"]].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(runtime.predict(matrix), expected, rtol=1e-12)
    # A frame's columns are taken by name, in any order, beside columns the model ignores.
    frame = houses[["price", "rooms", "size"]]
    np.testing.assert_allclose(runtime.predict(frame), expected, rtol=1e-12)
    assert not runtime.has_proba
    assert runtime.classes == []
    # The folder was importable only while model.py was imported.
    assert str(house_model) not in sys.path
    assert "features" not in sys.modules


def test_sibling_modules_of_two_models_are_their_own(
    registry_store: RegistryStore, tmp_path: Path
) -> None:
    code = """
        from scale import FACTOR

        class Model:
            feature_names = ["x"]

            def load(self, folder):
                pass

            def predict(self, frame):
                return frame["x"] * FACTOR
    """
    runtimes = []
    for factor in (2, 3):
        folder = write_model(tmp_path / f"times{factor}", code, scale__py=f"FACTOR = {factor}\n")
        version = register_model(
            registry_store, folder, Registration(name=f"times{factor}"), safe=False
        )
        runtimes.append(load_runtime(registry_store.local_folder(version)))
    rows = np.array([[1.0], [5.0]])
    np.testing.assert_array_equal(runtimes[0].predict(rows), [2.0, 10.0])
    np.testing.assert_array_equal(runtimes[1].predict(rows), [3.0, 15.0])


def test_custom_classifier_gives_probabilities_for_its_classes(
    registry_store: RegistryStore, tmp_path: Path, houses: pd.DataFrame
) -> None:
    labels = np.where(houses["price"] > houses["price"].median(), "dear", "cheap")
    inner = LogisticRegression().fit(np.log(houses[["size"]].to_numpy()), labels)
    folder = write_model(
        tmp_path / "dear",
        """
        import joblib
        import numpy as np

        class Model:
            feature_names = ["size"]

            def load(self, folder):
                self.inner = joblib.load(folder / "inner.joblib")
                self.classes = [str(c).upper() for c in self.inner.classes_]

            def predict(self, frame):
                labels = self.inner.predict(np.log(frame[["size"]].to_numpy()))
                return np.char.upper(labels.astype(str))

            def predict_proba(self, frame):
                return self.inner.predict_proba(np.log(frame[["size"]].to_numpy()))
        """,
    )
    joblib.dump(inner, folder / "inner.joblib")
    version = register_model(registry_store, folder, Registration(name="dear"), safe=False)
    assert version.signature.task == "classification"
    assert version.signature.classes == ("CHEAP", "DEAR")
    assert version.signature.outputs == ("predict", "predict_proba")

    runtime = load_runtime(registry_store.local_folder(version))
    sizes = np.array([[45.0], [190.0]])
    predictions, probabilities = runtime.predict_with_proba(sizes)
    assert runtime.has_proba
    assert runtime.classes == ["CHEAP", "DEAR"]
    assert list(predictions) == [str(c).upper() for c in inner.predict(np.log(sizes))]
    np.testing.assert_allclose(probabilities, inner.predict_proba(np.log(sizes)), rtol=1e-12)


def test_unmet_requirements_fail_registration_naming_each(
    registry_store: RegistryStore, house_model: Path
) -> None:
    (house_model / "requirements.txt").write_text(
        "# what model.py needs\nscikit-learn>=999\nnumpy\nno-such-package-mlserve-test==1.0\n"
    )
    with pytest.raises(ArtifactError) as caught:
        register_model(registry_store, house_model, Registration(name="house"), safe=False)
    message = str(caught.value)
    assert "\n" not in message
    assert "scikit-learn>=999 (scikit-learn " in message
    assert "no-such-package-mlserve-test==1.0 (not installed)" in message
    assert "numpy" not in message  # installed, so met


def test_unmet_requirement_fails_loading_a_version(
    tmp_path: Path, house_model: Path, inner_regressor: LinearRegression
) -> None:
    (house_model / "requirements.txt").write_text("scikit-learn<0.1\n")
    folder = tmp_path / "version"
    folder.mkdir()
    archive = pack_folder(house_model, folder / "python-model.zip")
    manifest = VersionManifest(
        name="house",
        version=1,
        framework="python",
        model_file=archive.name,
        sha256=file_sha256(archive),
        signature=Signature((Feature("size", "float64"), Feature("rooms", "float64"))),
        created_at="2026-01-01T00:00:00+00:00",
    )
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict()))
    with pytest.raises(ArtifactError, match=r"requirements are not met: scikit-learn<0\.1 \("):
        load_runtime(folder)
    (house_model / "requirements.txt").write_text("scikit-learn>=0.1; python_version >= '3'\n")
    archive = pack_folder(house_model, folder / "python-model.zip")
    fixed = replace(manifest, sha256=file_sha256(archive))
    (folder / MANIFEST_FILE).write_text(json.dumps(fixed.to_dict()))
    np.testing.assert_allclose(
        load_runtime(folder).predict(np.array([[100.0, 3.0]])),
        expected_prices(inner_regressor, np.array([100.0]), np.array([3.0])),
    )


def test_safe_loading_refuses_custom_models(
    registry_store: RegistryStore, house_model: Path
) -> None:
    with pytest.raises(UnsafeArtifact, match="custom Python models run their own code"):
        register_model(registry_store, house_model, Registration(name="house"), safe=True)
    version = register_model(registry_store, house_model, Registration(name="house"), safe=False)
    with pytest.raises(UnsafeArtifact, match="safe loading refuses them"):
        load_runtime(registry_store.local_folder(version), safe=True)


def test_model_failing_to_load_says_why(registry_store: RegistryStore, tmp_path: Path) -> None:
    folder = write_model(
        tmp_path / "broken",
        """
        class Model:
            feature_names = ["x"]

            def load(self, folder):
                raise FileNotFoundError(f"vocabulary.txt is missing from {folder.name}")

            def predict(self, frame):
                return frame["x"]
        """,
    )
    with pytest.raises(ArtifactError) as caught:
        register_model(registry_store, folder, Registration(name="broken"), safe=False)
    assert str(caught.value) == (
        "model.py: Model failed to load: FileNotFoundError: vocabulary.txt is missing from broken"
    )


def test_model_py_without_a_model_class_is_refused(
    registry_store: RegistryStore, tmp_path: Path
) -> None:
    folder = write_model(tmp_path / "empty", "class Predictor:\n    pass\n")
    with pytest.raises(ArtifactError, match=r"model\.py defines no class Model"):
        register_model(registry_store, folder, Registration(name="empty"), safe=False)


def test_signature_from_data_names_the_inputs_and_categories_arrive_as_text(
    registry_store: RegistryStore, tmp_path: Path
) -> None:
    folder = write_model(
        tmp_path / "labels",
        """
        class Model:
            def load(self, folder):
                pass

            def predict(self, frame):
                assert list(frame.columns) == ["city", "size"]
                return frame["city"].str.upper() + ":" + (frame["size"] * 2).astype(str)
        """,
    )
    data = pd.DataFrame({"city": ["oslo", "bergen", "oslo"], "size": [1.0, 2.5, 3.0]})
    version = register_model(
        registry_store, folder, Registration(name="labels", signature_from=data), safe=False
    )
    assert [(f.name, f.kind) for f in version.signature.inputs] == [
        ("city", "categorical"),
        ("size", "numeric"),
    ]
    runtime = load_runtime(registry_store.local_folder(version))
    assert list(runtime.predict(data)) == ["OSLO:2.0", "BERGEN:5.0", "OSLO:6.0"]
    # Stored rows (objects, as a reference sample holds them) become the same typed columns.
    stored = np.array([["bergen", "4"]], dtype=object)
    assert list(runtime.predict(stored)) == ["BERGEN:8.0"]


def test_without_feature_names_or_data_registration_asks_for_data(
    registry_store: RegistryStore, tmp_path: Path
) -> None:
    folder = write_model(
        tmp_path / "anonymous",
        "class Model:\n    def load(self, folder):\n        pass\n\n"
        "    def predict(self, frame):\n        return frame.iloc[:, 0]\n",
    )
    with pytest.raises(InvalidInput, match="use --signature-from"):
        register_model(registry_store, folder, Registration(name="anonymous"), safe=False)
