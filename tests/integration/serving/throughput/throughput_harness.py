"""Requests of every protocol with their unbatched expected answers, floods, and metric scrapes.

A ``Probe`` is one HTTP request plus what the model says for its rows alone (predicted in this
process, one request at a time); ``check`` verifies a response against it, whatever the
protocol. Plain functions, so every test module and conftest.py can use them.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families
from serving_harness import LiveServer, decode_binary_response, v2_tensor
from sklearn.ensemble import RandomForestRegressor

Protocol = Literal["v2-json", "v2-binary", "v1", "mlflow"]
PREDICT, PROBA = "predict", "predict_proba"
FLOOD_TIMEOUT_S = 60.0


@dataclass
class Probe:
    """One request and the answer an unbatched prediction of its own rows gives."""

    protocol: Protocol
    path: str
    content: bytes
    headers: dict[str, str]
    model: str
    rows: int
    expected: dict[str, np.ndarray]
    """Output name -> values, in the order the response must list them."""
    request_id: str | None = None
    version: str | None = None
    """The version that must answer (None: not stated in this protocol's responses)."""
    classes: list[str] = field(default_factory=list)


Predict = Callable[[str, pd.DataFrame], np.ndarray]
"""(model name, rows) -> predictions of those rows alone."""


@dataclass(frozen=True)
class Reference:
    """In-process, unbatched predictions of the served versions."""

    predict: Predict
    predict_proba: Predict
    versions: dict[str, str]
    classes: dict[str, list[str]]

    def outputs(self, model: str, rows: pd.DataFrame, names: Sequence[str]) -> dict[str, Any]:
        """The requested outputs for ``rows`` alone."""
        functions = {PREDICT: self.predict, PROBA: self.predict_proba}
        return {name: functions[name](model, rows) for name in names}


def json_probe(
    protocol: Protocol, path: str, body: dict[str, Any], model: str, rows: int, **fields: Any
) -> Probe:
    """A probe with a JSON body."""
    return Probe(
        protocol,
        path,
        json.dumps(body).encode(),
        {"content-type": "application/json"},
        model,
        rows,
        **fields,
    )


def v2_json_probe(
    reference: Reference, model: str, frame: pd.DataFrame, index: int, rng: np.random.Generator
) -> Probe:
    """OIP JSON: one 2-D tensor (numeric models) or a tensor per feature, a random output
    selection, and random per-request and per-output binary flags."""
    selections: list[list[str]] = [[], [PREDICT]]
    if reference.classes[model]:
        selections += [[PROBA], [PROBA, PREDICT]]
    chosen = selections[int(rng.integers(len(selections)))]
    outputs = []
    for name in chosen:
        flag = rng.choice(["unset", "binary", "json"])
        parameters = {} if flag == "unset" else {"binary_data": bool(flag == "binary")}
        outputs.append({"name": name, "parameters": parameters})
    body: dict[str, Any] = {"id": f"req-{index}", "inputs": tensors_of(frame), "outputs": outputs}
    if rng.random() < 0.5:
        body["parameters"] = {"binary_data_output": bool(rng.random() < 0.5)}
    # none chosen: every declared output, in the metadata's order (the protocol's rule)
    declared = [PREDICT, PROBA] if reference.classes[model] else [PREDICT]
    expected = reference.outputs(model, frame, chosen or declared)
    return json_probe(
        "v2-json",
        f"/v2/models/{model}/infer",
        body,
        model,
        len(frame),
        expected=expected,
        request_id=f"req-{index}",
        version=reference.versions[model],
    )


def tensors_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """OIP JSON tensors: one FP64 matrix when every column is numeric, else one per column."""
    if all(frame[c].dtype.kind in "fiu" for c in frame.columns):
        return [v2_tensor("input-0", frame.to_numpy(dtype=np.float64), "FP64")]
    tensors = []
    for column in frame.columns:
        values = frame[column]
        if values.dtype.kind == "O":
            tensors.append(v2_tensor(column, values.to_numpy(dtype=str), "BYTES"))
        elif values.dtype.kind in "iu":
            tensors.append(v2_tensor(column, values.to_numpy(), "INT64"))
        else:
            tensors.append(v2_tensor(column, values.to_numpy(), "FP64"))
    return tensors


def v2_binary_probe(
    reference: Reference, model: str, frame: pd.DataFrame, index: int, rng: np.random.Generator
) -> Probe:
    """OIP with Triton binary tensors, encoded by NVIDIA's tritonclient (numeric models)."""
    values = frame.to_numpy(dtype=np.float64)
    tensor = triton.InferInput("input-0", list(values.shape), "FP64")
    tensor.set_data_from_numpy(values, binary_data=True)
    chosen = [PREDICT]
    if reference.classes[model]:
        chosen = [PREDICT, PROBA] if rng.random() < 0.5 else [PROBA]
    outputs = [triton.InferRequestedOutput(n, binary_data=bool(rng.random() < 0.7)) for n in chosen]
    content, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, request_id=f"req-{index}"
    )
    headers = {
        "inference-header-content-length": str(json_size),
        "content-type": "application/octet-stream",
    }
    return Probe(
        "v2-binary",
        f"/v2/models/{model}/infer",
        content,
        headers,
        model,
        len(frame),
        reference.outputs(model, frame, chosen),
        request_id=f"req-{index}",
        version=reference.versions[model],
    )


def v1_probe(
    reference: Reference, model: str, frame: pd.DataFrame, rng: np.random.Generator
) -> Probe:
    """The simple JSON API: rows as lists or records; probabilities asked for either way."""
    records = frame.astype(object).to_dict(orient="records")
    instances = records if rng.random() < 0.5 else [list(r.values()) for r in records]
    body: dict[str, Any] = {"instances": instances}
    chosen = [PREDICT]
    if reference.classes[model] and rng.random() < 0.6:
        chosen = [PREDICT, PROBA]
        if rng.random() < 0.5:
            body["probabilities"] = True
        else:
            body["parameters"] = {"probabilities": True}
    return json_probe(
        "v1",
        f"/v1/models/{model}:predict",
        body,
        model,
        len(frame),
        expected=reference.outputs(model, frame, chosen),
        version=reference.versions[model],
        classes=reference.classes[model],
    )


def mlflow_probe(
    reference: Reference, model: str, frame: pd.DataFrame, rng: np.random.Generator
) -> Probe:
    """MLflow scoring: dataframe_split, dataframe_records, inputs (columns) or a CSV body."""
    expected = reference.outputs(model, frame, [PREDICT])
    path = f"/invocations?model={model}"
    form = rng.choice(["split", "records", "inputs", "csv"])
    if form == "csv":
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False)
        return Probe(
            "mlflow",
            path,
            buffer.getvalue().encode(),
            {"content-type": "text/csv"},
            model,
            len(frame),
            expected,
        )
    plain = frame.astype(object)
    if form == "split":
        body: dict[str, Any] = {
            "dataframe_split": {"columns": list(frame.columns), "data": plain.values.tolist()}
        }
    elif form == "records":
        body = {"dataframe_records": plain.to_dict(orient="records")}
    else:
        body = {"inputs": {c: plain[c].tolist() for c in frame.columns}}
    return json_probe("mlflow", path, body, model, len(frame), expected=expected)


# -- checking answers ------------------------------------------------------------------------------


def as_labels(values: Any) -> list[Any]:
    """Predictions as plain Python values (bytes from tritonclient decoded)."""
    return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(values).tolist()]


def same_values(actual: Any, expected: np.ndarray, what: str) -> None:
    """Labels exactly; numbers up to the last bits a different BLAS blocking may change."""
    expected = np.asarray(expected)
    if expected.dtype.kind in "OUS":
        assert as_labels(actual) == as_labels(expected), what
    else:
        np.testing.assert_allclose(
            np.asarray(actual, dtype=np.float64), expected, rtol=1e-12, atol=1e-15, err_msg=what
        )


def outputs_of(probe: Probe, response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """(response document, output name -> values) of a 200 answer, in the response's order."""
    if probe.protocol == "v2-binary":
        length = response.headers.get("inference-header-content-length")
        result = triton.InferenceServerClient.parse_response_body(
            response.content, header_length=None if length is None else int(length)
        )
        document = result.get_response()
        return document, {o["name"]: result.as_numpy(o["name"]) for o in document["outputs"]}
    if probe.protocol == "v2-json":
        length = response.headers.get("inference-header-content-length")
        header = response.content[: int(length)] if length else response.content
        return json.loads(header), decode_binary_response(response)
    document = response.json()
    outputs = {PREDICT: document["predictions"]}
    if "probabilities" in document:
        outputs[PROBA] = document["probabilities"]
    return document, outputs


def check(probe: Probe, response: httpx.Response, label: str = "") -> None:
    """A 200 holding exactly this probe's own answers and nothing else."""
    what = f"{label} {probe.protocol} {probe.path}"
    assert response.status_code == 200, (what, response.text[:500])
    document, outputs = outputs_of(probe, response)
    assert list(outputs) == list(probe.expected), what
    for name, values in probe.expected.items():
        same_values(outputs[name], values, f"{what} {name}")
    if probe.request_id is not None:
        assert document["id"] == probe.request_id, what
    if probe.protocol.startswith("v2"):
        assert document["model_name"] == probe.model, what
    if probe.version is not None:
        assert document["model_version"] == probe.version, what
        assert response.headers["x-model-version"] == probe.version, what
    if PROBA in probe.expected and probe.protocol == "v1":
        assert document["classes"] == probe.classes, what


# -- sending --------------------------------------------------------------------------------------


async def _flood(url: str, probes: Sequence[Probe]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(probes), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=FLOOD_TIMEOUT_S) as client:
        return list(
            await asyncio.gather(
                *(client.post(p.path, content=p.content, headers=p.headers) for p in probes)
            )
        )


def flood(server: LiveServer, probes: Sequence[Probe]) -> list[httpx.Response]:
    """Send every probe at once, each on its own connection; the responses in probe order."""
    return asyncio.run(_flood(server.url, probes))


def send(server: LiveServer, probe: Probe) -> httpx.Response:
    """Send one probe."""
    return httpx.post(
        f"{server.url}{probe.path}", content=probe.content, headers=probe.headers, timeout=30
    )


# -- metrics --------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: LiveServer) -> Samples:
    """Every sample of one /metrics scrape, keyed by (name, labels)."""
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def growth(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much the matching samples of ``name`` grew between two scrapes."""
    return total(after, name, **labels) - total(before, name, **labels)


# -- generated traffic ----------------------------------------------------------------------------

FrameMaker = Callable[[np.random.Generator, int], pd.DataFrame]


def numeric_frame(columns: Sequence[str], low: float, high: float) -> FrameMaker:
    """Rows of uniform numbers in [low, high), rounded so they survive CSV and JSON exactly."""

    def make(rng: np.random.Generator, rows: int) -> pd.DataFrame:
        return pd.DataFrame(rng.uniform(low, high, (rows, len(columns))).round(3), columns=columns)

    return make


def churn_like_frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Customers: categorical plan and region, numeric monthly and integer tenure."""
    return pd.DataFrame(
        {
            "plan": rng.choice(["basic", "pro", "team"], rows).astype(object),
            "region": rng.choice(["eu", "us", "apac"], rows).astype(object),
            "monthly": rng.uniform(5, 100, rows).round(2),
            "tenure": rng.integers(1, 60, rows),
        }
    )


def mixed_probes(
    reference: Reference,
    makers: dict[str, FrameMaker],
    count: int,
    *,
    seed: int,
    max_rows: int = 20,
) -> list[Probe]:
    """``count`` probes over ``makers``' models and every protocol each model speaks."""
    rng = np.random.default_rng(seed)
    models = sorted(makers)
    probes = []
    for index in range(count):
        model = models[index % len(models)]
        frame = makers[model](rng, int(rng.integers(1, max_rows + 1)))
        numeric = all(frame[c].dtype.kind in "fiu" for c in frame.columns)
        protocols: list[Protocol] = ["v2-json", "v1", "mlflow"] + (["v2-binary"] if numeric else [])
        protocol = protocols[int(rng.integers(len(protocols)))]
        if protocol == "v2-json":
            probes.append(v2_json_probe(reference, model, frame, index, rng))
        elif protocol == "v2-binary":
            probes.append(v2_binary_probe(reference, model, frame, index, rng))
        elif protocol == "v1":
            probes.append(v1_probe(reference, model, frame, rng))
        else:
            probes.append(mlflow_probe(reference, model, frame, rng))
    return probes


# -- the slow model -------------------------------------------------------------------------------

FOREST = "forest"
FOREST_FEATURES = ["x1", "x2"]
FOREST_TREES = 400
"""Enough trees that one predict call takes several milliseconds."""

forest_frame = numeric_frame(FOREST_FEATURES, -3.0, 3.0)


@dataclass(frozen=True)
class SlowProject:
    """A project folder whose registry holds ``forest`` version 1 in production."""

    root: Path
    estimator: RandomForestRegressor
    version: str

    @property
    def reference(self) -> Reference:
        """Unbatched predictions of the served forest."""

        def predict(_model: str, rows: pd.DataFrame) -> np.ndarray:
            return np.asarray(self.estimator.predict(rows[FOREST_FEATURES].to_numpy(np.float64)))

        def no_proba(_model: str, _rows: pd.DataFrame) -> np.ndarray:
            raise AssertionError("the forest is a regressor")

        return Reference(predict, no_proba, {FOREST: self.version}, {FOREST: []})
