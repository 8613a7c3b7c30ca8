"""Gradient-boosted trees served side by side: mlserve's XGBoost and LightGBM runtimes, the same
models converted to ONNX (`mlserve convert`), and MLServer's xgboost and lightgbm runtimes.

Each server runs alone, pinned to core 0; wrk runs pinned to core 1; servers are started one at
a time and interleaved over several rounds; the tables show medians. Every server's answers are
checked against the framework's own predict before it is measured. Run through `make bench`.

MLServer's lightgbm runtime answers the booster's raw output (the probability of class 1 for a
binary model) where mlserve and MLServer's xgboost runtime answer the class: the same trees are
walked, the answer's decoding differs by one comparison per row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from serve_bench import MLSERVE, MLSERVER, WORK, body, free_port, run_wrk, stop, wait_ready
from sklearn.datasets import make_classification

HERE = Path(__file__).resolve().parent
SCENARIOS = [("1 row", 1, 1), ("1 row", 1, 64), ("100 rows", 100, 8)]


@dataclass(frozen=True)
class Server:
    name: str
    kind: str  # mlserve | mlserver
    version: int = 1  # mlserve: 1 is the native model, 2 its ONNX conversion
    batching: bool = False


SERVERS = [
    Server("mlserve (default, native runtime)", "mlserve", version=1),
    Server("mlserve (default, ONNX conversion)", "mlserve", version=2),
    Server("MLServer 1.7.1 (default)", "mlserver"),
    Server("MLServer 1.7.1 (adaptive batching)", "mlserver", batching=True),
]


@dataclass
class Model:
    name: str
    framework: str
    file: Path
    mlserver_file: str
    implementation: str
    expected: np.ndarray  # classes of the first 100 rows
    x: np.ndarray


def train_models() -> list[Model]:
    import lightgbm as lgb
    import xgboost as xgb

    x, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    folder = WORK / "models"
    folder.mkdir(parents=True, exist_ok=True)
    booster = xgb.XGBClassifier(n_estimators=100, max_depth=6, random_state=0).fit(x, y)
    booster.save_model(folder / "xgboost.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LightGBM warns about unnamed features
        forest = lgb.LGBMClassifier(n_estimators=100, random_state=0, verbose=-1).fit(x, y)
    forest.booster_.save_model(folder / "lightgbm.txt")
    return [
        Model(
            "xgboost",
            "xgboost",
            folder / "xgboost.json",
            "model.json",
            "mlserver_xgboost.XGBoostModel",
            booster.predict(x[:100]),
            x,
        ),
        Model(
            "lightgbm",
            "lightgbm",
            folder / "lightgbm.txt",
            "model.bst",
            "mlserver_lightgbm.LightGBMModel",
            forest.predict(x[:100]),
            x,
        ),
    ]


def register_in_mlserve(models: list[Model]) -> Path:
    """Version 1: the native model; version 2: its ONNX conversion, checked by `convert`."""
    project = WORK / "mlserve-frameworks"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for model in models:
        for command in (
            ["register", str(model.file), "--name", model.name],
            ["convert", f"{model.name}:1", "--to", "onnx"],
        ):
            subprocess.run([str(MLSERVE), *command], cwd=project, check=True, capture_output=True)
    return project


def mlserver_repo(model: Model, batching: bool, port: int) -> Path:
    repo = WORK / f"mlserver-{model.name}-{'batch' if batching else 'default'}"
    shutil.rmtree(repo, ignore_errors=True)
    model_dir = repo / model.name
    model_dir.mkdir(parents=True)
    shutil.copy(model.file, model_dir / model.mlserver_file)
    settings: dict[str, object] = {
        "name": model.name,
        "implementation": model.implementation,
        "parameters": {"uri": f"./{model.mlserver_file}"},
    }
    if batching:
        settings["max_batch_size"] = 64
        settings["max_batch_time"] = 0.002
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    (repo / "settings.json").write_text(
        json.dumps({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()})
    )
    return repo


def start(server: Server, model: Model, project: Path, port: int) -> subprocess.Popen[bytes]:
    if server.kind == "mlserve":
        command = [str(MLSERVE), "serve", f"{model.name}:{server.version}", "--port", str(port)]
        command += ["--grpc-port", "0"]
        cwd = project
    else:
        repo = mlserver_repo(model, server.batching, port)
        command = [str(MLSERVER), "start", str(repo)]
        cwd = repo
    log = (WORK / f"{server.kind}-frameworks.log").open("ab")
    return subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=cwd, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip


def check_answer(port: int, model: Model, path: str) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{port}{path}",
        content=body(model.x[:100]),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    response.raise_for_status()
    data = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float64)
    got = (data > 0.5).astype(int) if data.dtype.kind == "f" and model.name == "lightgbm" else data
    if not np.array_equal(np.asarray(got).astype(int), model.expected):
        raise RuntimeError(
            f"{model.name} on port {port} answered {got[:5]}, not {model.expected[:5]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="seconds per scenario")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "frameworks.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    servers = SERVERS
    if not MLSERVER.exists():
        servers = [s for s in servers if s.kind != "mlserver"]
        print("MLServer venv missing: skipping MLServer (make bench installs it)", file=sys.stderr)
    models = train_models()
    project = register_in_mlserve(models)
    results: dict[tuple[str, str, int, int], list[dict[str, float]]] = {}
    for round_number in range(args.rounds):
        for model in models:
            for server in servers:
                port = free_port()
                path = f"/v2/models/{model.name}/infer"
                process = start(server, model, project, port)
                try:
                    wait_ready(port, _as_serve_bench(server), model.name, body(model.x[:1]))
                    check_answer(port, model, path)
                    run_wrk(port, path, body(model.x[:1]), 8, 2)  # warm-up
                    for label, rows, connections in SCENARIOS:
                        payload = body(np.resize(model.x, (rows, model.x.shape[1])))
                        measured = run_wrk(port, path, payload, connections, args.duration)
                        key = (model.name, server.name, rows, connections)
                        results.setdefault(key, []).append(measured)
                        print(
                            f"round {round_number + 1} {model.name:9} {server.name:36} {label:8} "
                            f"c={connections:<3} {measured['rps']:9.0f} req/s "
                            f"p50 {measured['p50_ms']:7.2f} ms p99 {measured['p99_ms']:7.2f} ms "
                            f"errors {measured['errors']:.0f}",
                            flush=True,
                        )
                finally:
                    stop(process)
    write_table(results, models, servers, args)


def _as_serve_bench(server: Server):  # type: ignore[no-untyped-def]
    from serve_bench import Server as BenchServer

    return BenchServer(server.name, server.kind)


def write_table(results, models, servers, args) -> None:  # type: ignore[no-untyped-def]
    def median(key: tuple[str, str, int, int], field_name: str) -> float:
        return statistics.median(r[field_name] for r in results[key])

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; server on core 0, wrk on core 1; "
        f"medians of {args.rounds} interleaved rounds of {args.duration} s per scenario. "
        "Models: XGBoost and LightGBM classifiers, 100 trees, 20 features.",
        "",
        "| model | scenario | server | req/s | p50 ms | p99 ms | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    ratios = [
        "",
        "| model | scenario | mlserve | vs MLServer best (req/s) | p99 vs MLServer best's |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for model in models:
        for label, rows, connections in SCENARIOS:
            scenario = f"{label}, c={connections}"
            for server in servers:
                key = (model.name, server.name, rows, connections)
                if key in results:
                    lines.append(
                        f"| {model.name} | {scenario} | {server.name} | {median(key, 'rps'):,.0f} | "
                        f"{median(key, 'p50_ms'):.2f} | {median(key, 'p99_ms'):.2f} | "
                        f"{max(r['errors'] for r in results[key]):.0f} |"
                    )
            peers = [
                (model.name, s.name, rows, connections)
                for s in servers
                if s.kind == "mlserver" and (model.name, s.name, rows, connections) in results
            ]
            best = max(peers, key=lambda k: median(k, "rps")) if peers else None
            for server in servers:
                key = (model.name, server.name, rows, connections)
                if server.kind != "mlserve" or key not in results:
                    continue
                vs = f"{median(key, 'rps') / median(best, 'rps'):.2f}x" if best else "-"
                p99 = f"{median(key, 'p99_ms') / median(best, 'p99_ms'):.2f}x" if best else "-"
                ratios.append(f"| {model.name} | {scenario} | {server.name} | {vs} | {p99} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines + ratios) + "\n")
    print("\n".join(lines + ratios))


if __name__ == "__main__":
    main()
