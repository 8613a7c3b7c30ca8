"""The prediction cache: on per model, byte-identical hits, counted, and never across versions."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pandas as pd
from serving_harness import IRIS, PRICE, LiveServer, ServingProject, v2_tensor
from sklearn.pipeline import Pipeline
from throughput_harness import (
    FrameMaker,
    Reference,
    check,
    growth,
    mixed_probes,
    scrape,
    send,
    v2_json_probe,
)

CACHED_HEADERS = ("content-type", "inference-header-content-length")


def test_an_identical_request_is_answered_from_the_cache_byte_for_byte(
    cached_server: LiveServer, project_reference: Reference, project_frames: dict[str, FrameMaker]
) -> None:
    probes = mixed_probes(project_reference, {IRIS: project_frames[IRIS]}, 12, seed=40)
    assert {p.protocol for p in probes} == {"v2-json", "v2-binary", "v1", "mlflow"}
    labels = {"model": IRIS, "version": project_reference.versions[IRIS]}
    before = scrape(cached_server)
    for index, probe in enumerate(probes):
        computed = send(cached_server, probe)
        check(probe, computed, label=f"computed-{index}")
        cached = send(cached_server, probe)
        assert cached.content == computed.content, index
        for header in CACHED_HEADERS:
            assert cached.headers.get(header) == computed.headers.get(header), (index, header)
        assert cached.headers["x-model-version"] == labels["version"]
    after = scrape(cached_server)

    assert growth(before, after, "mlserve_cache_misses_total", **labels) == len(probes)
    assert growth(before, after, "mlserve_cache_hits_total", **labels) == len(probes)
    # hits never reach the model
    assert growth(before, after, "mlserve_rows_total", **labels) == sum(p.rows for p in probes)


def test_a_request_differing_in_one_value_is_a_miss(
    cached_server: LiveServer, project_reference: Reference, project_frames: dict[str, FrameMaker]
) -> None:
    rng = np.random.default_rng(41)
    rows = project_frames[IRIS](rng, 5)
    changed = rows.copy()
    changed.iloc[2, 3] += 1.5
    # the same generator state for both: the bodies differ in that one value only
    first, second = (
        v2_json_probe(project_reference, IRIS, r, 0, np.random.default_rng(5))
        for r in (rows, changed)
    )
    labels = {"model": IRIS, "version": project_reference.versions[IRIS]}
    check(first, send(cached_server, first))
    before = scrape(cached_server)
    check(second, send(cached_server, second))
    after = scrape(cached_server)
    assert growth(before, after, "mlserve_cache_misses_total", **labels) == 1
    assert growth(before, after, "mlserve_cache_hits_total", **labels) == 0


def iris_request(rows: pd.DataFrame) -> dict[str, Any]:
    """An OIP request for both outputs of ``rows``."""
    return {
        "inputs": [v2_tensor("input-0", rows.to_numpy(dtype=np.float64), "FP64")],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }


def probabilities(protocol: str, response_body: bytes) -> np.ndarray:
    """Class probabilities of a JSON response of the v1 or v2 API."""
    document = json.loads(response_body)
    if protocol == "v1":
        return np.asarray(document["probabilities"], dtype=np.float64)
    outputs = {o["name"]: o for o in document["outputs"]}
    proba = outputs["predict_proba"]
    return np.asarray(proba["data"], dtype=np.float64).reshape(proba["shape"])


def test_a_new_version_never_answers_from_the_old_versions_entries(
    cached_server: LiveServer,
    serving_project: ServingProject,
    tiny_classifier: Pipeline,
    iris_rows: pd.DataFrame,
) -> None:
    """Versions 1 and 2 of iris share a process and a cache setting, not cache entries."""
    rows = iris_rows.iloc[::3].reset_index(drop=True)
    old_expected = tiny_classifier.predict_proba(rows)
    new_expected = serving_project.predict_proba(IRIS, rows)
    assert not np.allclose(old_expected, new_expected)
    routes = {  # protocol: (body, path of version 1, path of the newest version)
        "v2": (
            iris_request(rows),
            f"/v2/models/{IRIS}/versions/1/infer",
            f"/v2/models/{IRIS}/infer",
        ),
        "v1": (
            {"instances": rows.to_numpy().tolist(), "probabilities": True},
            f"/v1/models/{IRIS}/versions/1:predict",
            f"/v1/models/{IRIS}:predict",
        ),
    }
    before = scrape(cached_server)
    for protocol, (body, old_path, new_path) in routes.items():
        old, old_again, new = (
            httpx.post(f"{cached_server.url}{path}", json=body, timeout=30)
            for path in (old_path, old_path, new_path)
        )
        assert old_again.content == old.content, protocol
        assert old.json()["model_version"] == "1", protocol
        assert new.json()["model_version"] == "2", protocol
        for response, expected in ((old, old_expected), (new, new_expected)):
            np.testing.assert_allclose(
                probabilities(protocol, response.content), expected, rtol=1e-12, atol=1e-15
            )
    after = scrape(cached_server)

    v1 = {"model": IRIS, "version": "1"}
    v2 = {"model": IRIS, "version": "2"}
    assert growth(before, after, "mlserve_cache_misses_total", **v1) == len(routes)
    assert growth(before, after, "mlserve_cache_hits_total", **v1) == len(routes)
    assert growth(before, after, "mlserve_cache_misses_total", **v2) == len(routes)
    assert growth(before, after, "mlserve_cache_hits_total", **v2) == 0


def test_a_model_without_the_cache_option_computes_every_request(
    cached_server: LiveServer, project_reference: Reference, project_frames: dict[str, FrameMaker]
) -> None:
    probe = mixed_probes(project_reference, {PRICE: project_frames[PRICE]}, 1, seed=42)[0]
    labels = {"model": PRICE, "version": project_reference.versions[PRICE]}
    before = scrape(cached_server)
    for attempt in range(2):
        check(probe, send(cached_server, probe), label=str(attempt))
    after = scrape(cached_server)
    assert growth(before, after, "mlserve_rows_total", **labels) == 2 * probe.rows
    assert not any(
        name.startswith("mlserve_cache_") and dict(ls).get("model") == PRICE for name, ls in after
    )
