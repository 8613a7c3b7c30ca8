"""Shared-cache benchmark: repeated requests answered from Redis by two replicas, beside the
in-process cache and no cache at all (issue 17).

Every scenario sends one fixed one-row OIP JSON request (RandomForest, as in serve_bench.py), so
after the first request every answer is a cache hit. Servers and redis-server run on core 0,
wrk on core 1 (two wrk processes, one per replica, when both replicas are measured); settings
are serve_bench.py's "tuned" ones (no access log) with the prediction log on, so every hit is
logged too. The hit counts come from each server's /metrics after the scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serve_bench import (
    HERE,
    MLSERVE,
    WORK,
    body,
    free_port,
    register_in_mlserve,
    run_wrk,
    stop,
    train_models,
)

MODEL = "randomforest"
PATH = f"/v2/models/{MODEL}/infer"
CONNECTIONS = 8
TUNED = {"MLSERVE_ACCESS_LOG": "false", "MLSERVE_LOG_LEVEL": "WARNING"}


@dataclass(frozen=True)
class Scenario:
    """Servers to start and how their cache is set."""

    name: str
    replicas: int
    cache: str  # "" (off) | "true" (in-process) | "redis"


SCENARIOS = [
    Scenario("no cache, 1 server", 1, ""),
    Scenario("in-process cache, 1 server", 1, "true"),
    Scenario("Redis cache, 1 server", 1, "redis"),
    Scenario("Redis cache, 2 replicas (wrk on both)", 2, "redis"),
]


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """redis-server on core 0 with no persistence; waits until it answers PING."""
    port = free_port()
    process = subprocess.Popen(
        [
            "taskset", "-c", "0", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(folder),
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while (
        subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        ).stdout.strip()
        != "PONG"
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not answer")
        time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def start_server(project: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`mlserve serve randomforest` on core 0."""
    log = (WORK / "cache-server.log").open("ab")
    return subprocess.Popen(
        ["taskset", "-c", "0", str(MLSERVE), "serve", MODEL, "--port", str(port)],
        cwd=project, env={**os.environ, **env}, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip


def wait_ready(port: int, timeout_s: float = 90) -> None:
    """Poll readiness until 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server on port {port} did not become ready")


def cache_counts(port: int) -> dict[str, float]:
    """Cache hits, misses and errors so far, summed over labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    counts = {"hits": 0.0, "misses": 0.0, "errors": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for kind in counts:
                if sample.name == f"mlserve_cache_{kind}_total":
                    counts[kind] += sample.value
    return counts


def wrk_on(ports: list[int], payload: bytes, duration_s: int) -> dict[str, float]:
    """One wrk per port at once (connections split between them): total req/s, worst p99."""
    if len(ports) == 1:
        return run_wrk(ports[0], PATH, payload, CONNECTIONS, duration_s)
    body_file = WORK / "cache-body.json"
    body_file.write_bytes(payload)
    processes = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                "wrk",
                "-t1",
                f"-c{CONNECTIONS // len(ports)}",
                f"-d{duration_s}s",
                "--timeout",
                "10s",
                "-s",
                str(HERE / "wrk_report.lua"),
                f"http://127.0.0.1:{port}{PATH}",
            ],
            env={**os.environ, "WRK_BODY_FILE": str(body_file)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    reports = []
    for process in processes:
        stdout, _ = process.communicate()
        line = next(x for x in stdout.splitlines() if x.startswith("WRK_JSON "))
        reports.append(json.loads(line.removeprefix("WRK_JSON ")))
    errors = sum(r[k] for r in reports for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": sum(r["requests"] / (r["duration_us"] / 1e6) for r in reports),
        "p50_ms": max(r["p50_us"] for r in reports) / 1000,
        "p99_ms": max(r["p99_us"] for r in reports) / 1000,
        "errors": errors,
    }


def measure(
    scenario: Scenario, project: Path, redis_url: str, payload: bytes, duration_s: int
) -> dict[str, float]:
    """Start the scenario's servers, warm them, measure, stop them."""
    env = {
        **TUNED,
        "MLSERVE_PREDICTION_LOG_URL": f"sqlite:///{WORK / 'cache-bench-predictions.db'}",
    }
    if scenario.cache:
        env["MLSERVE_MODELS__RANDOMFOREST__CACHE"] = scenario.cache
    if scenario.cache == "redis":
        env["MLSERVE_REDIS_URL"] = redis_url
    ports = [free_port() for _ in range(scenario.replicas)]
    processes = [start_server(project, port, env) for port in ports]
    try:
        for port in ports:
            wait_ready(port)
        for port in ports:  # warm-up: the first server computes and stores the answer
            run_wrk(port, PATH, payload, CONNECTIONS, 1)
        before = [cache_counts(port) for port in ports]
        measured = wrk_on(ports, payload, duration_s)
        after = [cache_counts(port) for port in ports]
    finally:
        for process in processes:
            stop(process)
    for kind in ("hits", "misses", "errors"):
        measured[f"cache_{kind}"] = sum(
            a[kind] - b[kind] for a, b in zip(after, before, strict=True)
        )
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration", type=int, default=4, help="seconds per scenario")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "cache.md")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is missing (apt-get install -y redis-server)")
    WORK.mkdir(exist_ok=True)
    models = train_models()
    project = register_in_mlserve(models)
    _model, _path, x = models["RandomForest"]
    payload = body(x[:1])
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="cache-bench-redis-") as folder:
        redis, redis_url = start_redis(Path(folder))
        try:
            for round_number in range(args.rounds):
                for scenario in SCENARIOS:
                    subprocess.run(
                        ["redis-cli", "-u", redis_url, "flushall"], capture_output=True, check=True
                    )
                    measured = measure(scenario, project, redis_url, payload, args.duration)
                    results[scenario.name].append(measured)
                    print(
                        f"round {round_number + 1} {scenario.name:40} {measured['rps']:8.0f} req/s "
                        f"p50 {measured['p50_ms']:6.2f} ms p99 {measured['p99_ms']:6.2f} ms "
                        f"hits {measured['cache_hits']:.0f} misses {measured['cache_misses']:.0f} "
                        f"cache errors {measured['cache_errors']:.0f} "
                        f"HTTP errors {measured['errors']:.0f}",
                        flush=True,
                    )
        finally:
            stop(redis)
    write_table(results, args)


def write_table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """bench/results/cache.md: one row per scenario, medians over rounds."""

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        "`mlserve serve` (no access log, prediction log on) and redis-server on core 0, wrk on "
        f"core 1 (c={CONNECTIONS} in all, split between replicas when both are measured); one "
        f"fixed one-row OIP JSON request to RandomForest (100 trees), so every request after the "
        f"first is a hit; medians of {args.rounds} round(s) of {args.duration} s per scenario.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | hits | misses | cache errors | HTTP errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in SCENARIOS:
        name = scenario.name
        lines.append(
            f"| {name} | {median(name, 'rps'):,.0f} | {median(name, 'p50_ms'):.2f} | "
            f"{median(name, 'p99_ms'):.2f} | {median(name, 'cache_hits'):,.0f} | "
            f"{median(name, 'cache_misses'):,.0f} | {median(name, 'cache_errors'):.0f} | "
            f"{max(r['errors'] for r in results[name]):.0f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
