"""Cold start: `mlserve serve` with one small model against the bare floor app (issue 21).

Each round starts the floor app (uvicorn + orjson + joblib, bench/floor_app.py) and then
`mlserve serve lr` with default settings, both pinned to core 0, and times from Popen to the
first 200 answer to a real predict request (polled every 10 ms). Rounds are interleaved so a
busy machine slows both alike; the table shows medians and their ratio. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import httpx
import joblib
from serve_bench import HERE, MLSERVE, UVICORN, WORK, body, free_port, stop
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

POLL_S = 0.01
FLOOR = ["uvicorn", "floor_app:app", "--loop", "uvloop", "--http", "httptools",
         "--no-access-log", "--log-level", "warning"]  # fmt: skip


def prepare() -> tuple[Path, Path, bytes]:
    """Train and save a small logistic regression, register it as `lr` in a fresh project."""
    x, y = make_classification(n_features=20, random_state=0)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    folder = WORK / "coldstart"
    shutil.rmtree(folder, ignore_errors=True)
    project = folder / "project"
    project.mkdir(parents=True)
    path = folder / "model.joblib"
    joblib.dump(model, path)
    subprocess.run(
        [str(MLSERVE), "register", str(path), "--name", "lr", "--alias", "production"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    return path, project, body(x[:1])


def start(kind: str, path: Path, project: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if kind == "floor":
        env["MODEL_PATH"] = str(path)
        command = [str(UVICORN), *FLOOR[1:], "--port", str(port)]
        cwd = HERE
    else:
        # gRPC stays on, as by default, on a free port: 8081 may be another server's.
        command = [
            str(MLSERVE),
            "serve",
            "lr",
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
        ]
        cwd = project
    with (WORK / f"coldstart-{kind}.log").open("ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            ["taskset", "-c", "0", *command], cwd=cwd, env=env, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip


def time_to_first_answer(kind: str, path: Path, project: Path, sample: bytes) -> float:
    """Seconds from Popen to the first 200 from a predict request."""
    port = free_port()
    url = f"http://127.0.0.1:{port}" + ("/" if kind == "floor" else "/v2/models/lr/infer")
    headers = {"content-type": "application/json"}
    began = time.perf_counter()
    process = start(kind, path, project, port)
    try:
        with httpx.Client(timeout=2) as client:
            while time.perf_counter() - began < 60:
                try:
                    if client.post(url, content=sample, headers=headers).status_code == 200:
                        return time.perf_counter() - began
                except httpx.HTTPError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"{kind} exited with {process.returncode}; see {WORK}")
                time.sleep(POLL_S)
        raise RuntimeError(f"{kind} did not answer within 60 s")
    finally:
        if process.poll() is None:
            stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "coldstart.md")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    path, project, sample = prepare()
    times: dict[str, list[float]] = {"floor": [], "mlserve": []}
    for round_number in range(args.rounds):
        for kind, samples in times.items():
            seconds = time_to_first_answer(kind, path, project, sample)
            samples.append(seconds)
            print(f"round {round_number + 1} {kind:8} {seconds:6.2f} s", flush=True)
    floor = statistics.median(times["floor"])
    mlserve = statistics.median(times["mlserve"])
    names = {
        "floor": f"floor: `{' '.join(FLOOR)}` (MODEL_PATH set, cwd bench/)",
        "mlserve": "`mlserve serve lr --grpc-port FREE` (default settings, cwd = project)",
    }
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; each server pinned to core 0 (`taskset -c 0`); "
        f"time from Popen to the first 200 from POST of a one-row predict request, polled every "
        f"{POLL_S * 1000:.0f} ms; medians of {args.rounds} interleaved rounds.",
        "",
        f"Command: `.venv/bin/python bench/coldstart_bench.py --rounds {args.rounds}`",
        "",
        "| server | median s | min s | max s |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, samples in times.items():
        lines.append(
            f"| {names[kind]} | {statistics.median(samples):.2f} | {min(samples):.2f} | "
            f"{max(samples):.2f} |"
        )
    lines += ["", f"mlserve / floor: **{mlserve / floor:.2f}x** (target: at most 1.5x)"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
