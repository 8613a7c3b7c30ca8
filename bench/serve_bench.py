"""Serving benchmark: mlserve against MLServer and a hand-written floor, side by side.

Two references answer a fixed body without parsing it: a raw ASGI app under uvicorn (the Python
HTTP limit) and nginx (the HTTP limit on one core).

Each server runs alone, pinned to core 0; wrk runs pinned to core 1. Servers are started one at
a time and interleaved over several rounds; the table shows medians. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
MLSERVE = ROOT / ".venv" / "bin" / "mlserve"
UVICORN = ROOT / ".venv" / "bin" / "uvicorn"
MLSERVER = HERE / ".venvs" / "mlserver" / "bin" / "mlserver"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
# What the fixed-body references answer: the floor's answer to one row.
FIXED_ANSWER = '{"outputs":[{"name":"predict","shape":[1],"datatype":"INT64","data":[1]}]}'
UVICORN_FLAGS = [
    "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
]  # fmt: skip

SCENARIOS = [("1 row", 1, 1), ("1 row", 1, 8), ("1 row", 1, 64), ("100 rows", 100, 8)]


@dataclass
class Server:
    """How to start one server configuration and where it answers."""

    name: str
    kind: str  # mlserve | mlserver | floor | raw_asgi | nginx
    env: dict[str, str] = field(default_factory=dict)
    batching: bool = False
    fixed_body: bool = False  # answers the same body whatever it is sent: no answer check


RAW_ASGI = "raw ASGI (uvicorn, fixed body)"
NGINX_NAME = "nginx (fixed body)"


SERVERS = [
    Server("mlserve (default)", "mlserve"),
    Server(
        "mlserve (tuned)",
        "mlserve",
        env={"MLSERVE_ACCESS_LOG": "false", "MLSERVE_LOG_LEVEL": "WARNING"},
    ),
    Server(
        "mlserve (tuned, no prediction log)",
        "mlserve",
        env={
            "MLSERVE_ACCESS_LOG": "false",
            "MLSERVE_LOG_LEVEL": "WARNING",
            "MLSERVE_PREDICTION_LOG": "false",
        },
    ),
    Server("MLServer 1.7.1 (default)", "mlserver"),
    Server("MLServer 1.7.1 (adaptive batching)", "mlserver", batching=True),
    Server("floor (uvicorn+orjson+predict)", "floor"),
    Server(RAW_ASGI, "raw_asgi", fixed_body=True),
    Server(NGINX_NAME, "nginx", fixed_body=True),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_models() -> dict[str, tuple[object, Path, np.ndarray]]:
    x, y = make_classification(n_features=20, random_state=0)
    models = {
        "LogisticRegression": LogisticRegression(max_iter=1000).fit(x, y),
        "RandomForest": RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(
            x, y
        ),
    }
    out = {}
    for name, model in models.items():
        folder = WORK / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.joblib"
        joblib.dump(model, path)
        out[name] = (model, path, x)
    return out


def register_in_mlserve(models: dict[str, tuple[object, Path, np.ndarray]]) -> Path:
    project = WORK / "mlserve-project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for name, (_, path, _) in models.items():
        subprocess.run(
            [str(MLSERVE), "register", str(path), "--name", name.lower(), "--alias", "production"],
            cwd=project,
            check=True,
            capture_output=True,
        )
    return project


def mlserver_repo(name: str, path: Path, batching: bool, port: int) -> Path:
    repo = WORK / f"mlserver-{name}-{'batch' if batching else 'default'}"
    shutil.rmtree(repo, ignore_errors=True)
    model_dir = repo / name.lower()
    model_dir.mkdir(parents=True)
    shutil.copy(path, model_dir / "model.joblib")
    settings: dict[str, object] = {
        "name": name.lower(),
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if batching:
        settings["max_batch_size"] = 64
        settings["max_batch_time"] = 0.002
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    (repo / "settings.json").write_text(
        json.dumps({"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()})
    )
    return repo


def nginx_command(port: int) -> list[str]:
    """Write a one-worker nginx config answering FIXED_ANSWER; everything it writes stays in WORK."""
    prefix = WORK / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    temp = "\n".join(
        f"  {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/json;
  client_body_buffer_size 64k;
{temp}
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    # return discards the request body (read and dropped, never buffered to disk).
    location / {{ return 200 '{FIXED_ANSWER}'; }}
  }}
}}
"""
    )
    assert NGINX is not None
    return [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf),
            "-g", "daemon off;"]  # fmt: skip


def start(
    server: Server, model: str, path: Path, project: Path, port: int
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **server.env}
    if server.kind == "mlserve":
        command = [str(MLSERVE), "serve", model.lower(), "--port", str(port)]
        cwd = project
    elif server.kind == "mlserver":
        repo = mlserver_repo(model, path, server.batching, port)
        command = [str(MLSERVER), "start", str(repo)]
        cwd = repo
    elif server.kind == "nginx":
        command = nginx_command(port)
        cwd = WORK
    elif server.kind == "raw_asgi":
        command = [str(UVICORN), "raw_asgi_app:app", "--port", str(port), *UVICORN_FLAGS]
        cwd = HERE
    else:
        env["MODEL_PATH"] = str(path)
        command = [str(UVICORN), "floor_app:app", "--port", str(port), *UVICORN_FLAGS]
        cwd = HERE
    log = (WORK / f"{server.kind}.log").open("ab")
    return subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=cwd, env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def infer_path(server: Server, model: str) -> str:
    if server.kind in ("mlserve", "mlserver"):
        return f"/v2/models/{model.lower()}/infer"
    return "/"


def body(rows: np.ndarray) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.ravel().tolist(),
                }
            ],
            # The predicted class only, from every server: an OIP request naming no output gets
            # every output the model declares from mlserve (the protocol's rule), predict only
            # from MLServer's scikit-learn runtime, and the floor app computes predict only.
            "outputs": [{"name": "predict"}],
        }
    ).encode()


def wait_ready(port: int, server: Server, model: str, sample: bytes, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}{infer_path(server, model)}"
    while time.monotonic() < deadline:
        try:
            response = httpx.post(
                url, content=sample, headers={"content-type": "application/json"}, timeout=2
            )
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} did not become ready on port {port}")


def check_answer(
    port: int, server: Server, model_name: str, model: object, rows: np.ndarray
) -> None:
    url = f"http://127.0.0.1:{port}{infer_path(server, model_name)}"
    response = httpx.post(
        url, content=body(rows), headers={"content-type": "application/json"}, timeout=10
    )
    response.raise_for_status()
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    got = np.asarray(outputs["predict"]["data"]).astype(int)
    expected = model.predict(rows)  # type: ignore[attr-defined]
    if not np.array_equal(got, expected):
        raise RuntimeError(f"{server.name} answered {got[:5]}, expected {expected[:5]}")


def run_wrk(
    port: int, path: str, payload: bytes, connections: int, duration_s: int
) -> dict[str, float]:
    body_file = WORK / "body.json"
    body_file.write_bytes(payload)
    result = subprocess.run(
        [
            "taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
            "--timeout", "10s", "-s", str(HERE / "wrk_report.lua"), f"http://127.0.0.1:{port}{path}",
        ],
        env={**os.environ, "WRK_BODY_FILE": str(body_file)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"]
    return {
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8, help="seconds per scenario")
    parser.add_argument(
        "--servers", default="", help="comma-separated substrings to select servers"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "serving.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    servers = [
        s for s in SERVERS if not args.servers or any(k in s.name for k in args.servers.split(","))
    ]
    if not MLSERVER.exists():
        servers = [s for s in servers if s.kind != "mlserver"]
        print("MLServer venv missing: skipping MLServer (make bench installs it)", file=sys.stderr)
    if NGINX is None:
        servers = [s for s in servers if s.kind != "nginx"]
        print("nginx missing: skipping nginx (make bench installs it)", file=sys.stderr)
    models = train_models()
    project = register_in_mlserve(models)
    results: dict[tuple[str, str, int, int], list[dict[str, float]]] = {}
    for round_number in range(args.rounds):
        for model_name, (model, path, x) in models.items():
            for server in servers:
                port = free_port()
                process = start(server, model_name, path, project, port)
                try:
                    wait_ready(port, server, model_name, body(x[:1]))
                    if not server.fixed_body:
                        check_answer(port, server, model_name, model, x[:100])
                    run_wrk(port, infer_path(server, model_name), body(x[:1]), 8, 2)  # warm-up
                    for label, rows, connections in SCENARIOS:
                        payload = body(np.resize(x, (rows, x.shape[1])))
                        measured = run_wrk(
                            port,
                            infer_path(server, model_name),
                            payload,
                            connections,
                            args.duration,
                        )
                        results.setdefault((model_name, server.name, rows, connections), []).append(
                            measured
                        )
                        print(
                            f"round {round_number + 1} {model_name:18} {server.name:36} {label:8} c={connections:<3} "
                            f"{measured['rps']:9.0f} req/s p50 {measured['p50_ms']:7.2f} ms "
                            f"p99 {measured['p99_ms']:7.2f} ms errors {measured['errors']:.0f}",
                            flush=True,
                        )
                finally:
                    stop(process)
    write_table(results, models, servers, args)


def write_table(results, models, servers, args) -> None:  # type: ignore[no-untyped-def]
    def median(key: tuple[str, str, int, int], field_name: str) -> float:
        return statistics.median(r[field_name] for r in results[key])

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; server on core 0, wrk on core 1; "
        f"medians of {args.rounds} interleaved rounds of {args.duration} s per scenario.",
        "",
        "| model | scenario | server | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios = [
        "",
        "| model | scenario | mlserve config | vs MLServer best (req/s) | vs floor (req/s) | p50 vs floor | p99 vs floor "
        "| vs raw ASGI (req/s) | vs nginx (req/s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model_name in models:
        for label, rows, connections in SCENARIOS:
            scenario = f"{label}, c={connections}"
            for server in servers:
                key = (model_name, server.name, rows, connections)
                if key not in results:
                    continue
                lines.append(
                    f"| {model_name} | {scenario} | {server.name} | {median(key, 'rps'):,.0f} | "
                    f"{median(key, 'p50_ms'):.2f} | {median(key, 'p90_ms'):.2f} | {median(key, 'p99_ms'):.2f} | "
                    f"{max(r['errors'] for r in results[key]):.0f} |"
                )
            mlserver = [
                median((model_name, s.name, rows, connections), "rps")
                for s in servers
                if s.kind == "mlserver" and (model_name, s.name, rows, connections) in results
            ]
            floor_key = (model_name, "floor (uvicorn+orjson+predict)", rows, connections)
            limit_keys = [(model_name, name, rows, connections) for name in (RAW_ASGI, NGINX_NAME)]
            for server in servers:
                key = (model_name, server.name, rows, connections)
                if server.kind != "mlserve" or key not in results:
                    continue
                rps = median(key, "rps")
                vs_mlserver = f"{rps / max(mlserver):.2f}x" if mlserver else "-"
                if floor_key in results:
                    vs_floor = f"{rps / median(floor_key, 'rps'):.2f}x"
                    p50 = f"{median(key, 'p50_ms') / median(floor_key, 'p50_ms'):.2f}x"
                    p99 = f"{median(key, 'p99_ms') / median(floor_key, 'p99_ms'):.2f}x"
                else:
                    vs_floor = p50 = p99 = "-"
                vs_limits = " | ".join(
                    f"{rps / median(k, 'rps'):.2f}x" if k in results else "-" for k in limit_keys
                )
                ratios.append(
                    f"| {model_name} | {scenario} | {server.name} | {vs_mlserver} | {vs_floor} | {p50} | {p99} "
                    f"| {vs_limits} |"
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines + ratios) + "\n")
    print("\n".join(lines + ratios))


if __name__ == "__main__":
    main()
