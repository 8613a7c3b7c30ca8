"""gRPC benchmark: mlserve's gRPC beside its own REST (in the same process and run) and beside
MLServer's gRPC, one server at a time on core 0, the load generators on core 1.

gRPC load: a Python grpc.aio client process (one HTTP/2 connection, C concurrent calls of
ModelInfer with the tensor in raw_input_contents, as tritonclient sends it; requests serialized
once and answers left undecoded, so the client spends its time in gRPC itself). REST load: wrk
with serve_bench's JSON body. The table gives the load generator's CPU use: near 100 % it, not
the server, set the pace. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import serve_bench as rest
import uvloop

from mlserve.serving.grpc import grpc_predict_v2_pb2 as pb
from mlserve.serving.grpc.stub import SERVICE, InferenceStub, path_of
from mlserve.serving.protocol import NUMPY_TYPES

HERE = Path(__file__).resolve().parent
SCENARIOS = [("1 row", 1, 1), ("1 row", 1, 64), ("100 rows", 100, 1), ("100 rows", 100, 64)]
GRPC, REST = "gRPC", "REST (JSON)"
"""Row name suffixes: the protocol a figure was measured over."""
READY_TIMEOUT_S = 60.0
FLOOR = "floor (grpc.aio+numpy+predict)"
"""A minimal gRPC server: what grpcio's asyncio server and model.predict cost alone."""


@dataclass
class Server:
    """One server configuration: which kind, and which protocols to measure on it."""

    name: str
    kind: str  # mlserve | mlserver
    batching: bool = False
    env: dict[str, str] = field(default_factory=dict)


SERVERS = [
    Server("mlserve (default)", "mlserve"),
    Server(
        "mlserve (tuned)",
        "mlserve",
        env={"MLSERVE_ACCESS_LOG": "false", "MLSERVE_LOG_LEVEL": "WARNING"},
    ),
    Server("MLServer 1.7.1 (default)", "mlserver"),
    Server("MLServer 1.7.1 (adaptive batching)", "mlserver", batching=True),
    Server(FLOOR, "floor"),
]


def infer_request(model: str, rows: np.ndarray) -> pb.ModelInferRequest:
    """ModelInfer for ``rows`` as one raw FP64 tensor, asking for ``predict`` only (what
    MLServer's scikit-learn runtime answers)."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input-0", datatype="FP64", shape=rows.shape)
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f8").tobytes())
    request.outputs.add(name="predict")
    return request


def predicted(response: pb.ModelInferResponse) -> np.ndarray:
    """The ``predict`` output of a response, raw or typed."""
    for index, output in enumerate(response.outputs):
        if output.name != "predict":
            continue
        if response.raw_output_contents:
            raw = response.raw_output_contents[index]
            return np.frombuffer(raw, dtype=NUMPY_TYPES[output.datatype])
        field_name = output.contents.ListFields()[0][0].name
        return np.asarray(getattr(output.contents, field_name))
    raise RuntimeError("no predict output in the response")


def start(server: Server, model: str, path: Path, project: Path) -> tuple[Any, int, int]:
    """Start a server on core 0: (process, HTTP port, gRPC port)."""
    http_port, grpc_port = rest.free_port(), rest.free_port()
    env = {**os.environ, **server.env}
    if server.kind == "mlserve":
        command = [
            str(rest.MLSERVE), "serve", model.lower(),
            "--port", str(http_port), "--grpc-port", str(grpc_port),
        ]  # fmt: skip
        cwd = project
    elif server.kind == "floor":
        command = [sys.executable, str(Path(__file__)), "floor", "--port", str(grpc_port)]
        command += ["--model", str(path)]
        cwd = HERE
    else:
        repo = rest.mlserver_repo(model, path, server.batching, http_port)
        settings = json.loads((repo / "settings.json").read_text())
        grpc_port = int(settings["grpc_port"])
        command = [str(rest.MLSERVER), "start", str(repo)]
        cwd = repo
    log = (rest.WORK / f"grpc-bench-{server.kind}.log").open("ab")
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=cwd, env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    return process, http_port, grpc_port


def wait_and_check(grpc_port: int, model_name: str, model: Any, x: np.ndarray) -> None:
    """Wait until ModelInfer answers, then compare 100 predictions with the model's own."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        infer = InferenceStub(channel).call("ModelInfer")
        while True:
            try:
                infer(infer_request(model_name.lower(), x[:1]), timeout=2)
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
        response = infer(infer_request(model_name.lower(), x[:100]), timeout=10)
    got = predicted(response).astype(int)
    expected = model.predict(x[:100])
    if not np.array_equal(got, expected):
        raise RuntimeError(f"gRPC answered {got[:5]}, expected {expected[:5]}")


def run_grpc_load(
    grpc_port: int, payload: bytes, connections: int, duration_s: int
) -> dict[str, float]:
    """Run the load client on core 1; its measurements."""
    body_file = rest.WORK / "grpc-body.bin"
    body_file.write_bytes(payload)
    result = subprocess.run(
        [
            "taskset", "-c", "1", sys.executable, str(Path(__file__)), "load",
            "--target", f"127.0.0.1:{grpc_port}", "--body", str(body_file),
            "--concurrency", str(connections), "--duration", str(duration_s),
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("GRPC_JSON "))
    measured: dict[str, float] = json.loads(line.removeprefix("GRPC_JSON "))
    return measured


def run_rest_load(
    http_port: int, model: str, payload: bytes, connections: int, duration_s: int
) -> dict[str, float]:
    """wrk against the REST endpoint (serve_bench's), with wrk's CPU use."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    measured = rest.run_wrk(
        http_port, f"/v2/models/{model}/infer", payload, connections, duration_s
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    measured["client_cpu"] = cpu_s / duration_s
    return measured


# -- the load client (a process of its own) --------------------------------------------------------


async def drive(target: str, body: bytes, concurrency: int, duration_s: float) -> dict[str, float]:
    """Send ``body`` as ModelInfer from ``concurrency`` callers for ``duration_s``."""
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        call = channel.unary_unary(path_of("ModelInfer"))  # bytes in, bytes out
        await call(body, timeout=10)  # connected before the clock starts
        latencies: list[float] = []
        errors = 0
        started = time.perf_counter()
        stop_at = started + duration_s

        async def caller() -> None:
            nonlocal errors
            while (sent := time.perf_counter()) < stop_at:
                try:
                    await call(body, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)

        cpu_before = time.process_time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = (time.process_time() - cpu_before) / elapsed
    ordered = np.sort(np.asarray(latencies)) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ordered, 50)),
        "p90_ms": float(np.percentile(ordered, 90)),
        "p99_ms": float(np.percentile(ordered, 99)),
        "errors": errors,
        "client_cpu": cpu,
    }


def load_main(args: argparse.Namespace) -> None:
    """The `load` subcommand: print one GRPC_JSON line."""
    result = asyncio.run(
        drive(args.target, args.body.read_bytes(), args.concurrency, args.duration)
    )
    print("GRPC_JSON " + json.dumps(result), flush=True)


# -- the floor (a process of its own) ---------------------------------------------------------------


async def serve_floor(port: int, model_path: Path) -> None:
    """Answer ModelInfer with model.predict of the raw FP64 input, nothing else."""
    import joblib

    model = joblib.load(model_path)

    async def infer(request: pb.ModelInferRequest, _context: Any) -> pb.ModelInferResponse:
        tensor = request.inputs[0]
        rows = np.frombuffer(request.raw_input_contents[0], dtype="<f8").reshape(tensor.shape)
        labels = model.predict(rows).astype("<i8")
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
        response.outputs.add(name="predict", datatype="INT64", shape=labels.shape)
        response.raw_output_contents.append(labels.tobytes())
        return response

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# -- the benchmark -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command")
    load = commands.add_parser("load", help="internal: the load client")
    load.add_argument("--target", required=True)
    load.add_argument("--body", type=Path, required=True)
    load.add_argument("--concurrency", type=int, required=True)
    load.add_argument("--duration", type=float, required=True)
    floor = commands.add_parser("floor", help="internal: the floor server")
    floor.add_argument("--port", type=int, required=True)
    floor.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario")
    parser.add_argument("--models", default="", help="comma-separated substrings of model names")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "grpc.md")
    args = parser.parse_args()
    if args.command == "load":
        load_main(args)
        return
    if args.command == "floor":
        uvloop.run(serve_floor(args.port, args.model))
        return
    rest.WORK.mkdir(exist_ok=True)
    servers = SERVERS
    if not rest.MLSERVER.exists():
        servers = [s for s in servers if s.kind != "mlserver"]
        print("MLServer venv missing: skipping MLServer (make bench installs it)", file=sys.stderr)
    models = {
        name: trained
        for name, trained in rest.train_models().items()
        if not args.models or any(k in name for k in args.models.split(","))
    }
    project = rest.register_in_mlserve(models)
    results: dict[tuple[str, str, int, int], list[dict[str, float]]] = {}
    for round_number in range(args.rounds):
        for model_name, (model, path, x) in models.items():
            for server in servers:
                measure(server, model_name, (model, path, x), project, args, results, round_number)
    write_table(results, models, args)


def measure(
    server: Server,
    model_name: str,
    trained: tuple[Any, Path, np.ndarray],
    project: Path,
    args: argparse.Namespace,
    results: dict[tuple[str, str, int, int], list[dict[str, float]]],
    round_number: int,
) -> None:
    """Every scenario against one server: gRPC, and REST too for mlserve."""
    model, path, x = trained
    process, http_port, grpc_port = start(server, model_name, path, project)
    try:
        wait_and_check(grpc_port, model_name, model, x)
        warm = infer_request(model_name.lower(), x[:1]).SerializeToString()
        run_grpc_load(grpc_port, warm, 8, 2)
        for label, rows, connections in SCENARIOS:
            batch = np.resize(x, (rows, x.shape[1]))
            runs = [f"{server.name} {GRPC}"]
            if server.kind == "mlserve":
                runs.append(f"{server.name} {REST}")
            for name in runs:
                if name.endswith(GRPC):
                    payload = infer_request(model_name.lower(), batch).SerializeToString()
                    measured = run_grpc_load(grpc_port, payload, connections, args.duration)
                else:
                    measured = run_rest_load(
                        http_port, model_name.lower(), rest.body(batch), connections, args.duration
                    )
                results.setdefault((model_name, name, rows, connections), []).append(measured)
                print(
                    f"round {round_number + 1} {model_name:18} {name:40} {label:8} "
                    f"c={connections:<3} {measured['rps']:9.0f} req/s "
                    f"p50 {measured['p50_ms']:7.2f} ms p99 {measured['p99_ms']:7.2f} ms "
                    f"errors {measured['errors']:.0f} client CPU {measured['client_cpu']:.0%}",
                    flush=True,
                )
    finally:
        rest.stop(process)


def write_table(
    results: dict[tuple[str, str, int, int], list[dict[str, float]]],
    models: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """The markdown tables: every figure, then mlserve gRPC's ratios."""

    def median(key: tuple[str, str, int, int], name: str) -> float:
        return statistics.median(r[name] for r in results[key])

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; server on core 0, load generator on core 1; "
        f"medians of {args.rounds} interleaved rounds of {args.duration} s per scenario.",
        "",
        "| model | scenario | server | req/s | p50 ms | p99 ms | errors | client CPU |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ratios = [
        "",
        "| model | scenario | mlserve config | gRPC vs MLServer best gRPC (req/s) | gRPC vs its REST (req/s) | p99 vs its REST | gRPC vs gRPC floor (req/s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    names = [n for s in SERVERS for n in (f"{s.name} {GRPC}", f"{s.name} {REST}")]
    for model_name in models:
        for label, rows, connections in SCENARIOS:
            scenario = f"{label}, c={connections}"
            for name in names:
                key = (model_name, name, rows, connections)
                if key not in results:
                    continue
                lines.append(
                    f"| {model_name} | {scenario} | {name} | {median(key, 'rps'):,.0f} | "
                    f"{median(key, 'p50_ms'):.2f} | {median(key, 'p99_ms'):.2f} | "
                    f"{max(r['errors'] for r in results[key]):.0f} | "
                    f"{median(key, 'client_cpu'):.0%} |"
                )
            theirs = [
                median((model_name, n, rows, connections), "rps")
                for n in names
                if n.startswith("MLServer") and (model_name, n, rows, connections) in results
            ]
            for server in SERVERS:
                ours = (model_name, f"{server.name} {GRPC}", rows, connections)
                if server.kind != "mlserve" or ours not in results:
                    continue
                rest_key = (model_name, f"{server.name} {REST}", rows, connections)
                vs_mlserver = f"{median(ours, 'rps') / max(theirs):.2f}x" if theirs else "-"
                floor_key = (model_name, f"{FLOOR} {GRPC}", rows, connections)
                vs_floor = "-"
                if floor_key in results:
                    vs_floor = f"{median(ours, 'rps') / median(floor_key, 'rps'):.2f}x"
                vs_rest = p99 = "-"
                if rest_key in results:
                    vs_rest = f"{median(ours, 'rps') / median(rest_key, 'rps'):.2f}x"
                    p99 = f"{median(ours, 'p99_ms') / median(rest_key, 'p99_ms'):.2f}x"
                ratios.append(
                    f"| {model_name} | {scenario} | {server.name} | {vs_mlserver} | {vs_rest} | "
                    f"{p99} | {vs_floor} |"
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines + ratios) + "\n")
    print("\n".join(lines + ratios))


if __name__ == "__main__":
    main()
