"""Overload: goodput, rejections and health of `mlserve serve` (default settings) when offered
1x, 2x, 4x and 16x its capacity, and 1024 clients, for LogisticRegression and RandomForest with
one-row and 100-row OIP JSON requests.

The server runs on core 0 and wrk on core 1, as in serve_bench.py. Capacity is measured first:
wrk at 1..32 clients finds the best goodput (answers 200 per second) and the fewest clients that
reach 90% of it; that client count is "1x". During each overload run this process sends, on
core 1 too, a few inference requests of its own (to time the 503s: wrk's latencies mix 200s
and 503s) and health probes round-robin over /v2/health/live, /v2/health/ready, /ping and
/health. Targets (issue 23): goodput at least 0.8x the best, 503 p99 at most 10 ms, health p99
at most 100 ms, memory flat.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from serve_bench import (
    HERE,
    MLSERVE,
    WORK,
    Server,
    body,
    check_answer,
    free_port,
    infer_path,
    register_in_mlserve,
    stop,
    train_models,
    wait_ready,
)

MLSERVE_DEFAULT = Server("mlserve (default)", "mlserve")
SWEEP_CLIENTS = (1, 2, 4, 8, 16, 32)
LOADS = (1, 2, 4, 16)
MOST_CLIENTS = 1024
HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready", "/ping", "/health")
PROBE_EVERY_S = {"infer": 0.01, "health": 0.02}
PROBE_TIMEOUT_S = 10.0


@dataclass
class Probes:
    """Latencies of this process's own requests during one run, by kind and status."""

    infer: dict[int, list[float]] = field(default_factory=dict)
    health: list[float] = field(default_factory=list)
    health_failures: int = 0


def probe_loop(port: int, kind: str, payload: bytes, model: str, probes: Probes, done: threading.Event) -> None:  # fmt: skip
    """Send one request of ``kind`` every PROBE_EVERY_S[kind] until ``done``, timing each.

    Inference probes open a fresh connection each time (connecting is timed too): a client
    that honors Retry-After. The server holds a connection that retries sooner; wrk's own
    latencies show what that costs the clients that do.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT_S)
    turn = 0
    while not done.wait(PROBE_EVERY_S[kind]):
        started = time.perf_counter()
        if kind == "infer":
            connection.close()
        try:
            if kind == "infer":
                connection.request(
                    "POST", f"/v2/models/{model}/infer", payload,
                    {"content-type": "application/json"},
                )  # fmt: skip
            else:
                connection.request("GET", HEALTH_PATHS[turn % len(HEALTH_PATHS)])
                turn += 1
            response = connection.getresponse()
            response.read()
            status = response.status
            if response.getheader("connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException):
            connection.close()
            status = 0
        elapsed_ms = (time.perf_counter() - started) * 1000
        if kind == "infer":
            probes.infer.setdefault(status, []).append(elapsed_ms)
        elif status in (200, 503):  # ready may say 503 while shedding load; it answered
            probes.health.append(elapsed_ms)
        else:
            probes.health_failures += 1
            probes.health.append(elapsed_ms)
    connection.close()


def run_wrk(port: int, path: str, payload: bytes, clients: int, duration_s: float) -> dict[str, float]:  # fmt: skip
    """wrk with wrk_status.lua: answers per second by status and latency percentiles."""
    body_file = WORK / "overload-body.json"
    body_file.write_bytes(payload)
    result = subprocess.run(
        [
            "taskset", "-c", "1", "wrk", "-t1", f"-c{clients}", f"-d{round(duration_s)}s",
            "--timeout", "10s", "-s", str(HERE / "wrk_status.lua"),
            f"http://127.0.0.1:{port}{path}",
        ],
        env={**os.environ, "WRK_BODY_FILE": str(body_file)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    seconds = data["duration_us"] / 1e6
    return {
        "ok_per_s": data["ok"] / seconds,
        "rejected_per_s": data["unavailable"] / seconds,
        "other": data["other"],
        "errors": data["connect"] + data["read"] + data["write"] + data["timeout"],
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nan when there are no values)."""
    return float(np.percentile(values, q)) if values else float("nan")


def overload_run(
    port: int, model: str, payload: bytes, clients: int, duration_s: float, pid: int
) -> dict[str, float]:
    """One wrk run with probes beside it, and the server's RSS before and after."""
    server = psutil.Process(pid)
    rss_before = server.memory_info().rss
    probes, done = Probes(), threading.Event()
    threads = [
        threading.Thread(target=probe_loop, args=(port, kind, payload, model, probes, done))
        for kind in ("infer", "health")
    ]
    for thread in threads:
        thread.start()
    try:
        measured = run_wrk(port, f"/v2/models/{model}/infer", payload, clients, duration_s)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    rejected = probes.infer.get(503, [])
    measured.update(
        rejected_p50_ms=percentile(rejected, 50),
        rejected_p99_ms=percentile(rejected, 99),
        health_p99_ms=percentile(probes.health, 99),
        health_max_ms=max(probes.health, default=float("nan")),
        health_failures=probes.health_failures,
        probes_ok=len(probes.infer.get(200, [])),
        probes_rejected=len(rejected),
        rss_before_mib=rss_before / 2**20,
        rss_after_mib=server.memory_info().rss / 2**20,
    )
    return measured


def start_server(model: str, project: Path, port: int) -> subprocess.Popen[bytes]:
    log = (WORK / "overload-server.log").open("ab")
    return subprocess.Popen(
        ["taskset", "-c", "0", str(MLSERVE), "serve", model.lower(), "--port", str(port)],
        cwd=project, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip


def scenario(
    model_name: str, rows: int, x: np.ndarray, project: Path, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Capacity sweep, then each overload level, on one fresh server."""
    model = model_name.lower()
    payload = body(np.resize(x, (rows, x.shape[1])))
    port = free_port()
    process = start_server(model_name, project, port)
    results = []
    try:
        wait_ready(port, MLSERVE_DEFAULT, model_name, body(x[:1]))
        path = infer_path(MLSERVE_DEFAULT, model_name)
        run_wrk(port, path, payload, 8, 2)  # warm-up
        sweep = {c: run_wrk(port, path, payload, c, args.sweep_duration) for c in SWEEP_CLIENTS}
        best_sweep = max(r["ok_per_s"] for r in sweep.values())
        capacity = min(c for c, r in sweep.items() if r["ok_per_s"] >= 0.9 * best_sweep)
        print(
            f"{model_name} {rows} rows: sweep "
            + ", ".join(f"c={c} {r['ok_per_s']:.0f}/s" for c, r in sweep.items())
            + f"; 1x = {capacity} clients",
            flush=True,
        )
        levels = [(f"{m}x", capacity * m) for m in LOADS if capacity * m <= MOST_CLIENTS]
        if levels[-1][1] < MOST_CLIENTS:
            levels.append((f"{MOST_CLIENTS} clients", MOST_CLIENTS))
        for label, clients in levels:
            measured = overload_run(port, model, payload, clients, args.duration, process.pid)
            measured.update(clients=clients, best_sweep=best_sweep)
            measured["label"] = label  # type: ignore[assignment]  # one str among the floats
            results.append(measured)
            print(
                f"{model_name} {rows} rows {label:>12} c={clients:<4} "
                f"200/s {measured['ok_per_s']:7.0f} 503/s {measured['rejected_per_s']:7.0f} "
                f"503 p50/p99 {measured['rejected_p50_ms']:6.2f}/{measured['rejected_p99_ms']:7.2f} ms "
                f"health p99 {measured['health_p99_ms']:7.2f} ms "
                f"RSS {measured['rss_before_mib']:.0f}->{measured['rss_after_mib']:.0f} MiB",
                flush=True,
            )
        check_answer(port, MLSERVE_DEFAULT, model_name, _fitted[model_name], x[:100])
    finally:
        stop(process)
    return results


_fitted: dict[str, object] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=8, help="seconds per overload run")
    parser.add_argument("--sweep-duration", type=float, default=3, help="seconds per sweep run")
    parser.add_argument("--models", default="LogisticRegression,RandomForest")
    parser.add_argument("--rows", default="1,100")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "overload.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    os.sched_setaffinity(0, {1})  # the probes share wrk's core, never the server's
    models = train_models()
    _fitted.update({name: fitted for name, (fitted, _, _) in models.items()})
    project = register_in_mlserve(models)
    table: dict[tuple[str, int], list[dict[str, float]]] = {}
    for model_name in args.models.split(","):
        x = models[model_name][2]
        for rows in (int(r) for r in args.rows.split(",")):
            table[(model_name, rows)] = scenario(model_name, rows, x, project, args)
    write_table(table, args)


def write_table(table: dict[tuple[str, int], list[dict[str, float]]], args: argparse.Namespace) -> None:  # fmt: skip
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; `mlserve serve` with default settings on core 0, "
        f"wrk (-t1, OIP JSON) and the probes on core 1; {args.duration:g} s per load. "
        "Best = the most answers 200 per second seen at any client count (capacity sweep "
        "included); 503 latencies from this process's own inference probes (every 10 ms, each "
        "on a fresh connection, as a client honoring Retry-After); wrk p99 covers every answer, "
        "including the requests wrk sent before its Retry-After (held by the server); "
        "health p99 over /v2/health/live, /v2/health/ready, /ping and /health (every 20 ms).",
        "",
        "| model | rows | load | clients | 200/s | vs best | 503/s | 503 p50 ms | 503 p99 ms "
        "| wrk p99 ms | health p99 ms | RSS MiB before → after |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst: dict[str, float] = {"ratio": float("inf"), "rejected_p99": 0.0, "health_p99": 0.0}
    for (model_name, rows), results in table.items():
        best = max([results[0]["best_sweep"], *(r["ok_per_s"] for r in results)])
        for r in results:
            ratio = r["ok_per_s"] / best
            worst["ratio"] = min(worst["ratio"], ratio)
            if r["probes_rejected"]:
                worst["rejected_p99"] = max(worst["rejected_p99"], r["rejected_p99_ms"])
            worst["health_p99"] = max(worst["health_p99"], r["health_p99_ms"])
            failures = f" ({r['health_failures']:.0f} failed)" if r["health_failures"] else ""
            lines.append(
                f"| {model_name} | {rows} | {r['label']} | {r['clients']:.0f} | "
                f"{r['ok_per_s']:,.0f} | {ratio:.2f}x | {r['rejected_per_s']:,.0f} | "
                f"{r['rejected_p50_ms']:.2f} | {r['rejected_p99_ms']:.2f} | {r['p99_ms']:.0f} | "
                f"{r['health_p99_ms']:.1f}{failures} | "
                f"{r['rss_before_mib']:.0f} → {r['rss_after_mib']:.0f} |"
            )
    lines += [
        "",
        f"Worst goodput **{worst['ratio']:.2f}x** the best (target ≥ 0.8x); worst 503 p99 "
        f"**{worst['rejected_p99']:.2f} ms** (target ≤ 10 ms); worst health p99 "
        f"**{worst['health_p99']:.1f} ms** (target ≤ 100 ms).",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
