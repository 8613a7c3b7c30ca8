"""`mlserve rollout …` and `mlserve compare`, run in-process against a registry in a temp folder."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from mlserve.cli.context import console
from mlserve.cli.main import run
from mlserve.cli.rollout_cmd import is_better
from mlserve.monitoring import describe_features
from mlserve.monitoring.metrics import ServingMetrics
from mlserve.registry import NewVersion, RegistryStore
from mlserve.runtimes import dump_sklearn
from mlserve.types import Signature

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty registry folder; the working folder has no mlserve.yaml and output is wide."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("MLSERVE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(console, "width", 200)
    return tmp_path / ".mlserve"


def open_store(home: Path) -> RegistryStore:
    """The registry the CLI opens for ``--home home``."""
    return RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )


@pytest.fixture
def iris(
    home: Path,
    tmp_path: Path,
    classifier_file: Path,
    new_version: NewVersion,
    iris_frame: pd.DataFrame,
) -> str:
    """Model ``iris``: v1 predicts the majority class (production), v2 and v3 are the fitted
    logistic regression."""
    dummy = Pipeline([("classify", DummyClassifier(strategy="most_frequent"))])
    dummy.fit(iris_frame[IRIS_FEATURES], iris_frame["species"])
    dummy_file = dump_sklearn(dummy, tmp_path / "dummy.joblib")
    store = open_store(home)
    try:
        store.register_version("iris", dummy_file, new_version)
        store.register_version("iris", classifier_file, new_version)
        store.register_version("iris", classifier_file, new_version)
        store.set_alias("iris", "production", 1)
    finally:
        store.close()
    return "iris"


@pytest.fixture
def holdout(tmp_path: Path, iris_frame: pd.DataFrame) -> Path:
    """The iris rows with their ``species`` labels, as CSV."""
    path = tmp_path / "holdout.csv"
    iris_frame.to_csv(path, index=False)
    return path


def mlserve(home: Path, *args: str) -> int:
    """Run `mlserve --home HOME ARGS` in this process."""
    return run(["--home", str(home), *args])


def one_error_line(captured: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a failed command (no traceback)."""
    err = captured.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# -- start, set, rollback, history --------------------------------------------------------------


def test_start_set_and_rollback_are_recorded_with_the_actor(
    home: Path, iris: str, capsys: pytest.CaptureFixture[str]
) -> None:
    start = ["rollout", "start", iris, "--candidate", "2", "--canary", "10", "--shadow", "100"]
    limits = ["--max-error-rate", "0.02", "--max-p99-ratio", "2", "--window", "60"]
    assert mlserve(home, *start, "--sticky-header", "X-User", *limits) == 0
    assert "candidate 2 beside production 1, canary 10%, shadow 100%" in capsys.readouterr().out

    assert mlserve(home, "rollout", "set", iris, "--canary", "50", "--min-requests", "20") == 0
    assert "canary 50%" in capsys.readouterr().out
    assert mlserve(home, "rollout", "set", iris, "--no-sticky") == 0
    capsys.readouterr()

    store = open_store(home)
    try:
        rollout = store.rollout(iris)
        assert rollout is not None
        assert (rollout.canary, rollout.shadow, rollout.sticky_header) == (50.0, 100.0, None)
        limits_now = rollout.limits
        assert (limits_now.max_error_rate, limits_now.max_p99_ratio) == (0.02, 2.0)
        assert (limits_now.window_s, limits_now.min_requests) == (60.0, 20)
    finally:
        store.close()

    assert mlserve(home, "rollout", "rollback", iris, "--reason", "p99 too high") == 0
    assert "production 1 answers everything" in capsys.readouterr().out

    assert mlserve(home, "rollout", "history", iris) == 0
    out = capsys.readouterr().out
    for expected in ("start", "canary 10% -> 50%", "sticky header X-User -> none", "rollback"):
        assert expected in out
    assert "p99 too high" in out
    store = open_store(home)
    try:
        events = store.rollout_history(iris)
        assert {e.actor for e in events} == {events[0].actor} != {""}
    finally:
        store.close()


def test_status_shows_routing_limits_and_an_unreachable_server(
    home: Path, iris: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mlserve(home, "rollout", "status", iris) == 0
    assert capsys.readouterr().out.strip() == "iris: no active rollout"
    mlserve(home, "rollout", "start", iris, "--candidate", "3", "--canary", "25")
    capsys.readouterr()
    url = f"http://127.0.0.1:{free_port()}"
    assert mlserve(home, "rollout", "status", iris, "--server", url) == 0
    out = capsys.readouterr().out
    assert "rollout 1 active" in out
    assert "canary 25%, shadow 0%, no sticky header" in out
    assert "limits: none (never rolled back automatically)" in out
    assert f"server: not reachable at {url}" in out
    row = next(line for line in out.splitlines() if "candidate" in line and "│" in line)
    assert "3" in row
    assert "25%" in row


def test_status_reads_each_versions_traffic_from_the_server(
    home: Path, iris: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = CollectorRegistry()
    serving = ServingMetrics.create(registry)
    for version, count, failed, latency_s in (("1", 90, 0, 0.004), ("2", 10, 2, 0.2)):
        serving.requests.labels(iris, version, "v2", "200").inc(count - failed)
        serving.requests.labels(iris, version, "v2", "500").inc(failed)
        serving.errors.labels(iris, version, "v2", "500").inc(failed)
        for _ in range(count):
            serving.latency.labels(iris, version, "v2").observe(latency_s)
    mlserve(home, "rollout", "start", iris, "--candidate", "2", "--canary", "10")
    capsys.readouterr()
    with metrics_server(generate_latest(registry)) as url:
        assert mlserve(home, "rollout", "status", iris, "--server", url) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "90" in rows["production"]
    assert "0 (0.0%)" in rows["production"]
    assert "10" in rows["candidate"]
    assert "2 (20.0%)" in rows["candidate"]
    assert " ms" in rows["candidate"]
    assert f"server: {url}" in out


def test_rollout_errors_are_one_line_with_an_exit_code(
    home: Path, iris: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mlserve(home, "rollout", "start", iris, "--candidate", "2", "--canary", "150") == 4
    assert "canary must be a percentage from 0 to 100" in one_error_line(capsys)
    assert mlserve(home, "rollout", "start", iris, "--candidate", "9") == 3
    assert "has no version 9" in one_error_line(capsys)
    assert mlserve(home, "rollout", "start", iris, "--candidate", "1") == 7
    assert "already production" in one_error_line(capsys)
    assert mlserve(home, "rollout", "set", iris, "--canary", "5") == 3
    assert "model 'iris' has no active rollout" in one_error_line(capsys)
    assert mlserve(home, "rollout", "rollback", iris) == 3
    one_error_line(capsys)
    assert mlserve(home, "rollout", "promote", iris) == 3
    one_error_line(capsys)
    mlserve(home, "rollout", "start", iris, "--candidate", "2")
    capsys.readouterr()
    assert mlserve(home, "rollout", "start", iris, "--candidate", "3") == 7
    assert "mlserve rollout set" in one_error_line(capsys)
    assert mlserve(home, "rollout", "set", iris, "--sticky-header", "a b") == 4
    assert "not a valid HTTP header name" in one_error_line(capsys)
    assert mlserve(home, "rollout", "set", iris, "--sticky-header", "x", "--no-sticky") == 4
    one_error_line(capsys)
    assert mlserve(home, "rollout", "history", "nope") == 3
    assert "not registered" in one_error_line(capsys)


# -- promote and compare ------------------------------------------------------------------------


def test_promote_moves_production_to_the_candidate(
    home: Path, iris: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mlserve(home, "rollout", "start", iris, "--candidate", "2", "--canary", "100")
    capsys.readouterr()
    assert mlserve(home, "rollout", "promote", iris) == 0
    assert "iris@production → 2; rollout 1 promoted." in capsys.readouterr().out
    store = open_store(home)
    try:
        assert store.resolve("iris@production").version == 2
        assert store.rollout(iris) is None
    finally:
        store.close()


def test_compare_prints_both_versions_metrics_side_by_side(
    home: Path, iris: str, holdout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mlserve(home, "compare", iris, "production", "2", "--data", str(holdout)) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "v1 (production)" in out
    assert "v2" in out
    assert set(rows) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
    cells = [c.strip() for c in rows["accuracy"].split("│")[2:5]]
    assert cells[0] == "0.3333"  # the majority class of 10 + 10 + 10 rows
    assert float(cells[1]) > 0.9
    assert cells[2] == "v2"


def test_promote_requiring_a_better_metric_refuses_a_worse_candidate(
    home: Path, iris: str, holdout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(home)
    try:
        store.set_alias(iris, "production", 2)
    finally:
        store.close()
    mlserve(home, "rollout", "start", iris, "--candidate", "1", "--canary", "5")
    capsys.readouterr()
    gate = ["--require-better", "accuracy", "--data", str(holdout)]
    assert mlserve(home, "rollout", "promote", iris, *gate) == 7
    line = one_error_line(capsys)
    assert "not promoted: candidate 1 has accuracy 0.3333, production 2 has" in line
    assert (
        mlserve(
            home, "rollout", "promote", iris, "--require-better", "mape", "--data", str(holdout)
        )
        == 4
    )
    assert "unknown metric 'mape'" in one_error_line(capsys)
    assert mlserve(home, "rollout", "promote", iris, "--require-better", "f1") == 4
    one_error_line(capsys)
    store = open_store(home)
    try:
        assert store.resolve("iris@production").version == 2
        assert store.rollout(iris) is not None
    finally:
        store.close()


def test_promote_requiring_a_better_metric_promotes_a_better_candidate(
    home: Path, iris: str, holdout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mlserve(home, "rollout", "start", iris, "--candidate", "3")
    capsys.readouterr()
    gate = ["--require-better", "f1", "--data", str(holdout)]
    assert mlserve(home, "rollout", "promote", iris, *gate) == 0
    assert "iris@production → 3" in capsys.readouterr().out


def test_compare_refuses_a_file_without_the_target(
    home: Path,
    iris: str,
    tmp_path: Path,
    iris_frame: pd.DataFrame,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unlabelled = tmp_path / "unlabelled.csv"
    iris_frame.drop(columns=["species"]).to_csv(unlabelled, index=False)
    assert mlserve(home, "compare", iris, "1", "2", "--data", str(unlabelled)) == 4
    assert "target column 'species' not found" in one_error_line(capsys)


def test_compare_of_regressors_prefers_lower_errors(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.DataFrame({"x": [float(i) for i in range(20)]})
    frame["y"] = 3 * frame["x"] + 1
    signature = Signature(describe_features(frame[["x"]]), "regression", ("predict",), (), "y")
    store = open_store(home)
    try:
        noisy = frame.head(3).assign(y=[1.0, 9.0, 7.0])
        for number, train in enumerate((noisy, frame), start=1):  # v1 off the line, v2 on it
            model = LinearRegression().fit(train[["x"]], train["y"])
            path = dump_sklearn(model, tmp_path / f"line{number}.joblib")
            store.register_version("line", path, NewVersion("sklearn", signature))
    finally:
        store.close()
    frame.to_parquet(tmp_path / "line.parquet", index=False)
    assert mlserve(home, "compare", "line", "1", "2", "--data", str(tmp_path / "line.parquet")) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert set(rows) >= {"rmse", "mae", "r2"}
    assert all(rows[m].rstrip(" │").endswith("v2") for m in ("rmse", "mae", "r2"))


@pytest.mark.parametrize(
    ("metric", "ours", "theirs", "expected"),
    [
        ("accuracy", 0.9, 0.8, True),
        ("f1", 0.8, 0.8, False),
        ("r2", 0.1, 0.2, False),
        ("rmse", 1.0, 2.0, True),
        ("mae", 2.0, 1.0, False),
    ],
)
def test_better_means_higher_scores_and_lower_errors(
    metric: str, ours: float, theirs: float, expected: bool
) -> None:
    assert is_better(metric, ours, theirs) is expected


# -- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def metrics_server(body: bytes) -> Iterator[str]:
    """Serve ``body`` at /metrics on a free loopback port (the edge `rollout status` reads, standing
    in for a running server); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
