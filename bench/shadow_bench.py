"""Shadow cost: p50/p99 of `mlserve serve` (default settings) answering with production while a
rollout mirrors 100 % of its requests to a shadow version, beside the same load with no
rollout. Both versions are LogisticRegression (a model predicting in well under 1 ms).

Server on core 0, wrk on core 1, as in serve_bench.py; the rollout is started and rolled back
through the registry between measurements, exactly as `mlserve rollout` does. Target (issue
15): p99 with a 100 % shadow at most 1.2x the p99 without.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from serve_bench import HERE, WORK, body, free_port, run_wrk, stop
from swap_bench import MODEL, project_with_two_versions, start, wait_ready

from mlserve.registry import RegistryStore

CONNECTIONS = 8


def metric(port: int, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def wait_for_shadow(port: int, percent: float, timeout_s: float = 30) -> None:
    """Until the server applies (or ends) the rollout's shadow."""
    deadline = time.monotonic() + timeout_s
    while metric(port, "mlserve_rollout_weight_percent", kind="shadow") != percent:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not apply shadow={percent}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=12, help="seconds per measurement")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "shadow.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    project, x = project_with_two_versions()
    home = project / ".mlserve"
    store = RegistryStore(
        f"sqlite:///{home / 'registry.db'}", str(home / "artifacts"), home / "cache"
    )
    payload = body(x[:1])
    results: dict[str, list[dict[str, float]]] = {"no shadow": [], "100 % shadow": []}
    port = free_port()
    process = start(project, port)
    try:
        wait_ready(port, payload)
        path = f"/v2/models/{MODEL}/infer"
        run_wrk(port, path, payload, CONNECTIONS, 2)  # warm-up
        for round_number in range(args.rounds):
            for label, runs in results.items():
                if label == "100 % shadow":
                    store.start_rollout(MODEL, 2, shadow=100)
                    wait_for_shadow(port, 100)
                    run_wrk(port, path, payload, CONNECTIONS, 1)  # the candidate warms up
                measured = run_wrk(port, path, payload, CONNECTIONS, args.duration)
                if label == "100 % shadow":
                    store.rollback_rollout(MODEL, "shadow bench round over")
                    wait_for_shadow(port, 0)
                runs.append(measured)
                print(
                    f"round {round_number + 1} {label:13} {measured['rps']:8.0f} req/s "
                    f"p50 {measured['p50_ms']:6.2f} ms p99 {measured['p99_ms']:6.2f} ms "
                    f"errors {measured['errors']:.0f}",
                    flush=True,
                )
        shadowed = {
            result: metric(port, "mlserve_shadow_requests_total", result=result)
            for result in ("compared", "failed", "dropped")
        }
    finally:
        stop(process)
        store.close()
    write_table(results, shadowed, args)


def write_table(
    results: dict[str, list[dict[str, float]]],
    shadowed: dict[str, float],
    args: argparse.Namespace,
) -> None:
    def median(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    base, mirrored = median("no shadow", "p99_ms"), median("100 % shadow", "p99_ms")
    offered = sum(shadowed.values())
    lines = [
        f"Machine: {platform.processor() or platform.machine()}; `mlserve serve` with default "
        f"settings on core 0, wrk (c={CONNECTIONS}, one-row OIP JSON, LogisticRegression) on "
        f"core 1; medians of {args.rounds} interleaved rounds of {args.duration} s; the shadow "
        "is a second LogisticRegression version.",
        "",
        "| load | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, runs in results.items():
        lines.append(
            f"| {label} | {median(label, 'rps'):.0f} | {median(label, 'p50_ms'):.2f} | "
            f"{median(label, 'p99_ms'):.2f} | {sum(r['errors'] for r in runs):.0f} |"
        )
    lines += [
        "",
        f"p99 with a 100 % shadow = **{mirrored / base:.2f}x** the p99 without (target ≤ 1.2x); "
        f"p50 {median('100 % shadow', 'p50_ms') / median('no shadow', 'p50_ms'):.2f}x. "
        f"Mirrored requests: {shadowed['compared']:.0f} compared, {shadowed['failed']:.0f} "
        f"failed, {shadowed['dropped']:.0f} dropped "
        f"({shadowed['dropped'] / offered if offered else 0:.1%} of those offered).",
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
