"""A project folder with a registered classifier, inputs for it, and the real `mlserve batch`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlserve.monitoring import describe_features
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature

FEATURES = ["f0", "f1", "f2", "f3"]
_SCRIPT = shutil.which("mlserve", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "mlserve"]
"""The installed console script next to this interpreter, else ``python -m mlserve``."""
TIMEOUT_S = 120


def feature_frame(rows: int, seed: int) -> pd.DataFrame:
    """Four learnable numeric features."""
    x, _ = make_classification(
        n_samples=rows, n_features=4, n_informative=3, n_redundant=0, random_state=seed
    )
    return pd.DataFrame(x.round(6), columns=FEATURES)


def input_frame(rows: int, *, bad_every: int = 0, seed: int = 1) -> pd.DataFrame:
    """Rows to score with an ``id``; with ``bad_every``, every such row has f1 = 'oops'."""
    frame = feature_frame(rows, seed)
    frame.insert(0, "id", np.arange(rows))
    if bad_every:
        frame = frame.astype({"f1": object})
        frame.loc[frame.index % bad_every == bad_every - 1, "f1"] = "oops"
    return frame


@dataclass(frozen=True, slots=True)
class BatchProject:
    """A folder with an embedded registry (``home``) that `mlserve batch` runs in."""

    root: Path

    @property
    def home(self) -> Path:
        """The registry folder passed as --home."""
        return self.root / ".mlserve"

    def store(self) -> RegistryStore:
        """The project's registry (close it after use)."""
        return RegistryStore(
            f"sqlite:///{self.home / 'registry.db'}",
            str(self.home / "artifacts"),
            self.home / "cache",
        )

    def register(self, seed: int = 0, name: str = "churn", model: Any = None) -> Any:
        """Train and register ``model`` (default: a scaler + logistic regression); returns it
        fitted."""
        frame = feature_frame(300, seed)
        target = np.where(frame["f0"] + frame["f2"] > 0, "yes", "no")
        if model is None:
            model = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression())])
        model.fit(frame, target)
        signature = Signature(
            inputs=describe_features(frame),
            task="classification",
            outputs=("predict", "predict_proba"),
            classes=tuple(str(c) for c in model.classes_),
        )
        folder = self.root / "trained"
        folder.mkdir(parents=True, exist_ok=True)
        path = dump_sklearn(model, folder / f"model-{seed}.joblib")
        store = self.store()
        try:
            store.register_version(name, path, NewVersion(framework="sklearn", signature=signature))
        finally:
            store.close()
        return model

    def command(self, *args: str) -> list[str]:
        """The full command line of `mlserve --home HOME ARGS`."""
        return [*COMMAND, "--home", str(self.home), *args]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start `mlserve ARGS` in its own session (so its whole process tree can be killed)."""
        return subprocess.Popen(
            self.command(*args),
            cwd=self.root,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `mlserve ARGS` to the end."""
        return subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )


def cli_env() -> dict[str, str]:
    """This environment without MLSERVE_* settings, wide and colourless."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVE_")}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1"}


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The JSON summary `mlserve batch` printed."""
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data
