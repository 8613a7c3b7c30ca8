"""The `mlserve` command line, run as a real subprocess against an embedded registry."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from cli_harness import (
    STALE_CONFIG,
    Call,
    Project,
    Result,
    assert_ok,
    assert_one_line_error,
    cli_env,
    error_lines,
    free_port,
    open_registry,
    run_cli,
    run_cli_all,
)
from serving_harness import running_server
from sklearn.linear_model import LogisticRegression

from mlserve.cli.main import app
from mlserve.errors import AliasNotFound
from mlserve.runtimes import load_runtime
from mlserve.scaffold import MONITORING_FILES, template_path
from mlserve.training import TrainRequest, train
from mlserve.training.evaluate import CLASSIFICATION_METRICS

SAMPLE = "data/breast_cancer.csv"


def table_row(output: str, label: str) -> str:
    """The line of a rich table whose first cell is ``label``."""
    return next(line for line in output.splitlines() if line.startswith(f"│ {label} "))


# -- init and train -------------------------------------------------------------------------------


def test_init_force_writes_a_project_and_train_registers_its_sample(project: Project) -> None:
    for name in ("mlserve.yaml", ".env.example", "README.md", ".gitignore", SAMPLE):
        assert (project.folder / name).is_file()
        assert f"  {name}" in project.init.stdout
    for name in MONITORING_FILES:
        assert f"  {name}" in project.init.stdout
        assert (project.folder / name).read_bytes() == template_path(name).read_bytes()
    dashboard = json.loads((project.folder / "monitoring" / "grafana-dashboard.json").read_text())
    assert dashboard["title"] == "mlserve"
    alerts = yaml.safe_load((project.folder / "monitoring" / "prometheus-alerts.yml").read_text())
    assert [rule["alert"] for rule in alerts["groups"][0]["rules"]] == [
        "MlserveHighErrorRate",
        "MlserveHighClientErrorRate",
        "MlserveHighLatencyP95",
        "MlserveDriftDetected",
        "MlserveOnlineAccuracyLow",
        "MlserveModelNotReady",
        "MlservePredictionLogBacklog",
        "MlservePredictionLogDropping",
        "MlserveRolloutRolledBack",
    ]
    assert "mlserve train data/breast_cancer.csv --target diagnosis" in project.init.stdout
    assert "# MLSERVE_PORT=8080" in (project.folder / ".env.example").read_text()
    config = (project.folder / "mlserve.yaml").read_text()
    assert STALE_CONFIG not in config  # --force replaced it
    assert "port: 8080" in config
    sample = pd.read_csv(project.sample)
    assert sample.shape == (569, 31)
    assert set(sample["diagnosis"]) == {"benign", "malignant"}

    out = project.train.stdout
    assert "Registered cancer:1 as production (455 training rows, 114 test rows" in out
    assert "(classification," in out
    for metric in CLASSIFICATION_METRICS:
        assert table_row(out, metric).endswith("better │")
    assert "not better" not in out
    version_folder = project.folder / ".mlserve" / "artifacts" / "cancer" / "1"
    assert sorted(p.name for p in version_folder.iterdir()) == ["mlserve.json", "model.joblib"]


# -- registry -------------------------------------------------------------------------------------


def test_models_list_and_show(project: Project) -> None:
    results = run_cli_all(
        {
            "list": Call(["models", "list"], project.folder),
            "show": Call(["models", "show", "cancer"], project.folder),
            "json": Call(["models", "show", "cancer@production", "--json"], project.folder),
            "history": Call(["alias", "history", "cancer"], project.folder),
        }
    )
    for result in results.values():
        assert_ok(result)

    listed = table_row(results["list"].stdout, "cancer")
    assert "production→1" in listed

    shown = results["show"].stdout
    assert "cancer:1  framework=sklearn  task=classification" in shown
    assert "aliases: production" in shown
    assert "classes: benign, malignant" in shown
    assert "metrics: accuracy=" in shown
    assert "│ mean_radius " in shown
    assert "alias history" in shown

    data = json.loads(results["json"].stdout)
    assert (data["name"], data["version"], data["aliases"]) == ("cancer", 1, ["production"])
    assert data["framework"] == "sklearn"
    signature = data["signature"]
    assert len(signature["inputs"]) == 30
    assert signature["inputs"][0]["name"] == "mean_radius"
    assert signature["classes"] == ["benign", "malignant"]
    assert signature["target"] == "diagnosis"
    assert set(data["metrics"]) == set(CLASSIFICATION_METRICS)
    assert data["params"]["estimator"] == "logistic_regression"
    assert data["data_fingerprint"].startswith("sha256:")
    assert len(data["sha256"]) == 64
    assert Path(data["artifact_uri"]) == project.folder / ".mlserve" / "artifacts" / "cancer" / "1"
    production = [e for e in data["alias_history"] if e["alias"] == "production"]
    assert [(e["from"], e["to"]) for e in production] == [(None, 1)]

    history = results["history"].stdout
    assert "cancer: alias history" in history
    created = next(line for line in history.splitlines() if "│ production " in line)
    cells = [cell.strip() for cell in created.split("│")[2:5]]
    assert cells == ["production", "-", "1"]  # alias, from, to


def test_register_names_features_from_data_then_model_then_position(
    project: Project, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    data = pd.DataFrame(rng.normal(size=(40, 3)), columns=["height", "weight", "age"])
    data["label"] = (data["height"] + data["age"] > 0).astype(int)
    data.to_csv(tmp_path / "people.csv", index=False)
    features = data.drop(columns=["label"])
    joblib.dump(LogisticRegression().fit(features, data["label"]), tmp_path / "named.joblib")
    joblib.dump(
        LogisticRegression().fit(features.to_numpy(), data["label"]), tmp_path / "plain.joblib"
    )

    results = run_cli_all(
        {
            "from_data": Call(
                [
                    "register",
                    str(tmp_path / "plain.joblib"),
                    "--name",
                    "from_data",
                    "--framework",
                    "sklearn",
                    "--signature-from",
                    str(tmp_path / "people.csv"),
                    "--target",
                    "label",
                    "--alias",
                    "staging",
                ],
                project.folder,
            ),
            "from_model": Call(
                ["register", str(tmp_path / "named.joblib"), "--name", "from_model"],
                project.folder,
            ),
            "by_position": Call(
                ["register", str(tmp_path / "plain.joblib"), "-n", "by_position"],
                project.folder,
            ),
        }
    )

    for result in results.values():
        assert_ok(result)
    assert "Registered from_data:1 as staging (sklearn, 3 features)." in results["from_data"].stdout
    assert "Registered by_position:1 (sklearn, 3 features)." in results["by_position"].stdout
    with open_registry(project.folder) as store:
        from_data = store.resolve("from_data@staging")
        from_model = store.get_version("from_model", 1)
        by_position = store.get_version("by_position", 1)
        runtime = load_runtime(store.local_folder(from_data), expected_sha256=from_data.sha256)
    assert (runtime.predict(data) == data["label"]).mean() > 0.8
    assert from_data.signature.feature_names == ["height", "weight", "age"]
    assert from_data.signature.target == "label"
    assert from_data.signature.classes == (0, 1)
    assert from_data.reference_profile is not None
    assert from_data.data_fingerprint is not None
    assert from_model.signature.feature_names == ["height", "weight", "age"]
    assert by_position.signature.feature_names == ["f0", "f1", "f2"]
    assert by_position.reference_profile is None


def test_predict_through_a_new_alias_as_csv_or_json_then_delete_it(
    project: Project, tmp_path: Path
) -> None:
    rows = pd.read_csv(project.sample).head(5)
    rows.to_json(tmp_path / "rows.json", orient="records")  # the target column is ignored
    out_file = tmp_path / "scores.json"
    moved = run_cli("alias", "set", "cancer", "staging", "1", cwd=project.folder)
    assert_ok(moved)
    assert "cancer@staging → 1" in moved.stdout

    results = run_cli_all(
        {
            "csv": Call(["predict", "cancer@staging", SAMPLE], project.folder),
            "json": Call(
                [
                    "predict",
                    "cancer@staging",
                    str(tmp_path / "rows.json"),
                    "--proba",
                    "-o",
                    str(out_file),
                ],
                project.folder,
            ),
        }
    )

    assert_ok(results["csv"])
    scores = pd.read_csv(io.StringIO(results["csv"].stdout))
    assert list(scores.columns) == ["prediction", "model_version"]
    assert len(scores) == 569
    assert set(scores["model_version"]) == {"cancer:1"}
    assert (scores["prediction"] == pd.read_csv(project.sample)["diagnosis"]).mean() > 0.9

    assert_ok(results["json"])
    assert results["json"].stdout == ""
    assert f"wrote 5 predictions to {out_file}" in results["json"].stderr
    records = json.loads(out_file.read_text())
    assert len(records) == 5
    assert set(records[0]) == {"prediction", "proba_benign", "proba_malignant", "model_version"}
    for record in records:
        assert record["proba_benign"] + record["proba_malignant"] == pytest.approx(1.0)
        expected = max(("benign", "malignant"), key=lambda label: record[f"proba_{label}"])
        assert record["prediction"] == expected
        assert record["model_version"] == "cancer:1"

    deleted = run_cli("alias", "delete", "cancer", "staging", cwd=project.folder)
    assert_ok(deleted)
    assert "deleted cancer@staging (was 1)" in deleted.stdout
    with open_registry(project.folder) as store:
        trail = [(e.from_version, e.to_version) for e in store.alias_history("cancer")
                 if e.alias == "staging"]  # fmt: skip
        with pytest.raises(AliasNotFound):
            store.resolve("cancer@staging")
    assert trail == [(None, 1), (1, None)]


def test_runs_list_compares_runs_side_by_side(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project.folder)  # runs record the commit of the folder they start in
    with open_registry(project.folder) as store:
        request = TrainRequest(project.sample, "diagnosis", name="cancer_knn", estimator="knn")
        train(store, request)

    runs = run_cli("runs", "list", cwd=project.folder)

    assert_ok(runs)
    out = runs.stdout
    header = next(line for line in out.splitlines() if "run 1" in line)
    assert "run 2" in header
    assert header.index("run 2") < header.index("run 1")  # newest first
    assert "cancer_knn" in table_row(out, "model")
    estimators = table_row(out, "estimator")
    assert "knn" in estimators
    assert "logistic_regression" in estimators
    assert table_row(out, "rows (train+test)").count("455+114") == 2
    assert table_row(out, "baseline accuracy").count("0.6316") == 2
    fingerprints = table_row(out, "data").split("│")[2:4]
    assert fingerprints[0].strip() == fingerprints[1].strip() != "-"
    commits = [cell.strip() for cell in table_row(out, "git commit").split("│")[2:4]]
    assert commits == ["-", "-"]  # not in a git repository


def test_status_lists_models_and_says_no_server_answers(project: Project) -> None:
    port = free_port()

    result = run_cli("status", cwd=project.folder, env={"MLSERVE_PORT": str(port)})

    assert_ok(result)
    row = table_row(result.stdout, "cancer")
    assert "production→1" in row
    assert "accuracy=0.9" in row
    assert "registry: sqlite:///.mlserve/registry.db" in result.stdout
    assert f"server: not reachable at http://127.0.0.1:{port}" in result.stdout
    assert "served models (live)" not in result.stdout


def live_cells(output: str, model: str) -> dict[str, str]:
    """The cells of ``model``'s row in status's live table, by column name."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "served models (live)" in line)
    header = next(line for line in lines[start:] if line.startswith("┃"))
    columns = [cell.strip() for cell in header.strip("┃").split("┃")]
    row = table_row("\n".join(lines[start:]), model)
    return dict(zip(columns, (cell.strip() for cell in row.strip("│").split("│")), strict=True))


def test_status_shows_live_traffic_errors_latency_and_online_accuracy(
    project: Project, tmp_path: Path
) -> None:
    sample = pd.read_csv(project.sample).head(8)
    records = sample.drop(columns=["diagnosis"]).to_dict(orient="records")
    env = {"MLSERVE_DRIFT_INTERVAL_S": "0"}  # no drift check: drift must show as missing
    with running_server(project.folder, "cancer", env=env, log_dir=tmp_path) as server:
        idle = run_cli("status", "--server", server.url, "--rate-window", "0", cwd=project.folder)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            predicted = []
            for i, record in enumerate(records):
                response = client.post(
                    "/v1/models/cancer:predict",
                    json={"instances": [record]},
                    headers={"x-request-id": f"status-{i}"},
                )
                assert response.status_code == 200, response.text
                predicted.append(response.json()["predictions"][0])
            for _ in range(2):  # invalid bodies: 400
                assert client.post("/v1/models/cancer:predict", json={}).status_code == 400
            feedback = [
                {"request_id": f"status-{i}", "label": label}
                for i, label in enumerate(sample["diagnosis"])
            ]
            response = client.post("/v1/models/cancer/feedback", json={"feedback": feedback})
            assert response.status_code == 200, response.text
        busy = run_cli("status", "--server", server.url, cwd=project.folder)

    assert_ok(idle)
    before = live_cells(idle.stdout, "cancer")
    assert (before["version"], before["state"], before["requests"]) == ("1", "ready", "0")
    for column in ("req/s", "errors", "p95", "drift", "online"):
        assert before[column] == "–", column
    assert_ok(busy)
    after = live_cells(busy.stdout, "cancer")
    assert after["requests"] == str(len(records) + 2)
    assert after["errors"] == f"2 ({2 / (len(records) + 2):.1%})"
    assert after["p95"].endswith(" ms")
    assert float(after["p95"].removesuffix(" ms")) > 0
    assert after["req/s (1 s)"] == "0.0"  # nothing was sent during the rate window
    assert after["drift"] == "–"
    accuracy = np.mean(np.asarray(predicted) == sample["diagnosis"].to_numpy())
    assert after["online"] == f"accuracy {accuracy:.3f}"
    assert after["labelled"] == str(len(records))
    assert "since the server started" in busy.stdout


# -- help -----------------------------------------------------------------------------------------


def command_paths() -> list[list[str]]:
    """Every command and sub-command of the `mlserve` app, as argument lists."""

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        if hasattr(command, "list_commands"):  # a group
            ctx = typer.Context(command)
            for name in command.list_commands(ctx):
                found += walk(command.get_command(ctx, name), [*path, name])
        return found

    return walk(typer.main.get_command(app), [])


HELP_COLUMNS = 120
HELP_SCRIPT = """
import json, sys
from mlserve.cli.main import run
for argv in json.loads(sys.argv[1]):
    code = run([*argv, "--help"])
    sys.stdout.flush()
    print(f"\\n@@@ {' '.join(['mlserve', *argv])} exit={code}", flush=True)
"""


def test_every_command_has_help_with_an_example(tmp_path: Path) -> None:
    paths = command_paths()
    assert ["models", "show"] in paths
    assert ["alias", "history"] in paths
    assert len(paths) >= 17
    # One interpreter runs every command's --help through the console script's entry point;
    # a process per command would spend half a minute importing.
    helps = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, json.dumps(paths)],
        cwd=tmp_path,
        env=cli_env({"COLUMNS": str(HELP_COLUMNS)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert helps.returncode == 0, helps.stderr
    assert helps.stderr == ""
    text = helps.stdout
    for argv in paths:
        name = " ".join(["mlserve", *argv])
        section, marker, text = text.partition(f"\n@@@ {name} exit=")
        assert marker, f"no help printed for {name!r}"
        code, _, text = text.partition("\n")
        assert code == "0", name
        assert f"Usage: {name} [OPTIONS]" in section, name
        assert "Example: mlserve " in section, f"`{name} --help` shows no example"
        # Paragraphs wrap at the terminal's width, not where the source's lines break: a line
        # followed by more of its paragraph is nearly full.
        lines = [line.rstrip() for line in section.split("╭", 1)[0].splitlines()]
        for line, after in itertools.pairwise(lines):
            if line and after:
                assert len(line) > HELP_COLUMNS - 40, (name, line)


# -- errors ---------------------------------------------------------------------------------------

ERROR_CASES: dict[str, tuple[list[str], dict[str, str], int, tuple[str, ...]]] = {
    "wrong-data-path": (
        ["predict", "cancer", "data/nope.csv"],
        {},
        4,
        ("data/nope.csv: no such file",),
    ),
    "init-again": (["init"], {}, 7, ("already has mlserve.yaml", "use --force to overwrite")),
    "unknown-model": (["predict", "ghost", SAMPLE], {}, 3, ("model 'ghost' is not registered",)),
    "unknown-version": (["models", "show", "cancer:7"], {}, 3, ("'cancer' has no version 7",)),
    "unknown-alias": (
        ["predict", "cancer@canary", SAMPLE],
        {},
        3,
        ("model 'cancer' has no alias 'canary'",),
    ),
    "invalid-reference": (
        ["predict", "cancer@@x", SAMPLE],
        {},
        4,
        ("invalid model reference 'cancer@@x'", "NAME@ALIAS"),
    ),
    "invalid-config": (
        ["status"],
        {"MLSERVE_PORT": "abc"},
        6,
        ("invalid settings: port:", "integer"),
    ),
}


@pytest.fixture(scope="module")
def failures(project: Project, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every failing invocation, run side by side once per module; results by case."""
    calls = {key: Call(args, project.folder, env) for key, (args, env, _, _) in ERROR_CASES.items()}
    calls["usage"] = Call(["alias", "set", "cancer", "staging"], project.folder)
    messy = pd.read_csv(project.sample)
    messy["label_copy"] = messy["diagnosis"]
    messy.loc[0, ["diagnosis", "label_copy"]] = "unsure"
    messy.to_csv(project.folder / "messy.csv", index=False)
    calls["several-problems"] = Call(
        ["train", "messy.csv", "--target", "diagnosis"], project.folder
    )
    tampered = tampered_project(tmp_path_factory.mktemp("tampered"))
    calls["tampered"] = Call(["predict", "tiny", "tiny.csv"], tampered)
    noise = noise_project(tmp_path_factory.mktemp("noise"))
    calls["not-better"] = Call(["train", "noise.csv", "-t", "label", "--require-better"], noise)
    calls["not-better-by-setting"] = Call(
        ["train", "noise.csv", "-t", "label"], noise, {"MLSERVE_TRAIN_REQUIRE_BETTER": "true"}
    )
    calls["other-target"] = Call(
        ["train", str(project.sample), "-t", "mean_radius", "--name", "cancer"], project.folder
    )
    return run_cli_all(calls)


def noise_project(folder: Path) -> Path:
    """A project with noise.csv: a row number, two noise features and an imbalanced label."""
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "row": np.arange(200),
            "a": rng.normal(size=200),
            "b": rng.normal(size=200),
            "label": np.where(rng.random(200) < 0.8, "common", "rare"),
        }
    )
    frame.to_csv(folder / "noise.csv", index=False)
    return folder


def test_a_model_no_better_than_its_baseline_is_refused_on_request(
    failures: dict[str, Result],
) -> None:
    for case in ("not-better", "not-better-by-setting"):
        assert_one_line_error(
            failures[case],
            4,
            "not registered: logistic_regression does not beat the trivial baseline on accuracy",
            "is 'label' the right target?",
        )


def test_a_model_name_keeps_its_target(failures: dict[str, Result]) -> None:
    assert_one_line_error(
        failures["other-target"], 7, "model 'cancer' predicts 'diagnosis'", "another --name"
    )


def test_train_says_plainly_what_looks_wrong_and_registers_anyway(tmp_path: Path) -> None:
    folder = noise_project(tmp_path)
    result = run_cli("train", "noise.csv", "--target", "label", cwd=folder)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("column 'row' looks like an identifier" in w for w in warnings), warnings
    assert any("does not beat the trivial baseline on accuracy" in w for w in warnings), warnings
    assert "Registered noise:1" in result.stdout


def tampered_project(folder: Path) -> Path:
    """A project whose one model file was changed after registration."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=30), "c": ["a", "b", "c"] * 10})
    frame["y"] = np.where(frame["x"] > 0, "up", "down")
    frame.to_csv(folder / "tiny.csv", index=False)
    with open_registry(folder) as store:
        train(store, TrainRequest(folder / "tiny.csv", "y"))
    model_file = folder / ".mlserve" / "artifacts" / "tiny" / "1" / "model.joblib"
    model_file.write_bytes(model_file.read_bytes() + b"\x00")
    return folder


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_error_is_one_clear_line_and_an_exit_code(case: str, failures: dict[str, Result]) -> None:
    _, _, exit_code, fragments = ERROR_CASES[case]
    assert_one_line_error(failures[case], exit_code, *fragments)


def test_tampered_artifact_fails_its_integrity_check(failures: dict[str, Result]) -> None:
    assert_one_line_error(
        failures["tampered"], 5, "model.joblib failed its integrity check", "tampered"
    )


def test_usage_errors_show_usage_not_an_unexpected_error(failures: dict[str, Result]) -> None:
    result = failures["usage"]
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unexpected" not in result.stderr
    assert result.stderr.startswith("Usage: mlserve alias set [OPTIONS]")
    assert "Error: Missing argument 'version'." in result.stderr


def test_every_dataset_problem_is_listed_at_once(failures: dict[str, Result]) -> None:
    lines = error_lines(failures["several-problems"], 4)
    assert lines[0] == "error: messy.csv cannot be trained on: 2 problem(s)"
    assert sorted(lines[1:]) == [
        "  - class(es) with fewer than 2 rows: 'unsure' (1 row); remove them or add data",
        "  - column 'label_copy' is identical to the target (leakage); drop it with --drop "
        "label_copy",
    ]


# -- settings -------------------------------------------------------------------------------------


def test_settings_come_from_flags_over_environment_over_yaml(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "mlserve.yaml").write_text(f"home: from_yaml\nport: {port}\n")
    env = {"MLSERVE_HOME": "from_env"}

    results = run_cli_all(
        {
            "env": Call(["status"], tmp_path, env),
            "flag": Call(["--home", "from_flag", "status"], tmp_path, env),
        }
    )

    for source, result in results.items():
        assert_ok(result)
        assert f"registry: sqlite:///from_{source}/registry.db" in result.stdout
        # Nothing overrides the port, so mlserve.yaml's applies.
        assert f"server: not reachable at http://127.0.0.1:{port}" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["from_env", "from_flag"]


def test_an_unreachable_registry_database_is_one_line_naming_it_without_its_password(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there: PostgreSQL refuses the connection
    url = f"postgresql+psycopg://mlserve:s3cret@127.0.0.1:{port}/registry"
    result = run_cli("models", "list", cwd=tmp_path, env=cli_env({"MLSERVE_DATABASE_URL": url}))
    assert_one_line_error(
        result, 8, f"registry database postgresql+psycopg://mlserve:***@127.0.0.1:{port}/registry"
    )
    assert "s3cret" not in result.stderr
