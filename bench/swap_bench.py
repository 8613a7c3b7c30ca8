"""Swap under load: p50/p99 and errors of `mlserve serve` (default settings) while the
`production` alias moves between two versions every 2 s, beside the same load in steady state.

The server runs on core 0 and wrk on core 1, as in serve_bench.py; the alias is moved from this
process through the registry, exactly as `mlserve alias set` does. Target (issue 14): p99
during swaps at most 2x the steady p99, zero errors.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
from serve_bench import HERE, MLSERVE, WORK, body, free_port, run_wrk, stop
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from mlserve.registry import RegistryStore

MODEL = "swapped"
SWAP_EVERY_S = 2.0
CONNECTIONS = 8


def project_with_two_versions() -> tuple[Path, np.ndarray]:
    """A project whose registry holds two LogisticRegression versions, production → 1."""
    x, y = make_classification(n_features=20, random_state=0)
    project = WORK / "swap-project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    for index, c in enumerate((1.0, 0.01), start=1):
        path = project / f"v{index}.joblib"
        joblib.dump(LogisticRegression(C=c, max_iter=1000).fit(x, y), path)
        subprocess.run(
            [str(MLSERVE), "register", str(path), "--name", MODEL],
            cwd=project,
            check=True,
            capture_output=True,
        )
    subprocess.run(
        [str(MLSERVE), "alias", "set", MODEL, "production", "1"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    return project, x


def start(project: Path, port: int) -> subprocess.Popen[bytes]:
    log = (WORK / "swap-server.log").open("ab")
    return subprocess.Popen(
        ["taskset", "-c", "0", str(MLSERVE), "serve", MODEL, "--port", str(port)],
        cwd=project, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip


def wait_ready(port: int, sample: bytes, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer",
                content=sample,
                headers={"content-type": "application/json"},
                timeout=2,
            )
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"mlserve did not become ready on port {port}")


def mover(project: Path, stop_event: threading.Event, moves: list[int]) -> None:
    """Move production between versions 1 and 2 every SWAP_EVERY_S until told to stop."""
    home = project / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    try:
        target = 2
        while not stop_event.wait(SWAP_EVERY_S):
            store.set_alias(MODEL, "production", target)
            moves.append(target)
            target = 3 - target
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=16, help="seconds per measurement")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "swap.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    project, x = project_with_two_versions()
    payload = body(x[:1])
    results: dict[str, list[dict[str, float]]] = {"steady": [], "swapping": []}
    moves_total = 0
    port = free_port()
    process = start(project, port)
    try:
        wait_ready(port, payload)
        path = f"/v2/models/{MODEL}/infer"
        run_wrk(port, path, payload, CONNECTIONS, 2)  # warm-up
        for round_number in range(args.rounds):
            for label in ("steady", "swapping"):
                stop_event, moves = threading.Event(), []
                thread = None
                if label == "swapping":
                    thread = threading.Thread(target=mover, args=(project, stop_event, moves))
                    thread.start()
                try:
                    measured = run_wrk(port, path, payload, CONNECTIONS, args.duration)
                finally:
                    stop_event.set()
                    if thread is not None:
                        thread.join()
                moves_total += len(moves)
                results[label].append(measured)
                print(
                    f"round {round_number + 1} {label:9} {measured['rps']:8.0f} req/s "
                    f"p50 {measured['p50_ms']:6.2f} ms p99 {measured['p99_ms']:6.2f} ms "
                    f"errors {measured['errors']:.0f} alias moves {len(moves)}",
                    flush=True,
                )
    finally:
        stop(process)
    write_table(results, moves_total, args)


def write_table(
    results: dict[str, list[dict[str, float]]], moves: int, args: argparse.Namespace
) -> None:
    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    steady_p99, swap_p99 = median("steady", "p99_ms"), median("swapping", "p99_ms")
    lines = [
        f"Machine: {platform.processor() or platform.machine()}; `mlserve serve` with default "
        f"settings on core 0, wrk (c={CONNECTIONS}, one-row OIP JSON, LogisticRegression) on "
        f"core 1; medians of {args.rounds} interleaved rounds of {args.duration} s; the "
        f"production alias moved every {SWAP_EVERY_S:g} s while swapping ({moves} moves).",
        "",
        "| load | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for label in ("steady", "swapping"):
        lines.append(
            f"| {label} | {median(label, 'rps'):.0f} | {median(label, 'p50_ms'):.2f} | "
            f"{median(label, 'p99_ms'):.2f} | {sum(r['errors'] for r in results[label]):.0f} |"
        )
    lines += [
        "",
        f"p99 while swapping = **{swap_p99 / steady_p99:.2f}x** the steady p99 (target ≤ 2x); "
        f"errors while swapping: **{sum(r['errors'] for r in results['swapping']):.0f}** "
        "(target 0).",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
