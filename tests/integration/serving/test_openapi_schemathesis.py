"""The OpenAPI document says what the server really answers: schemathesis generates requests
for every operation from /openapi.json, sends them to a live server and checks each answer
against the document (no 5xx, every status, content type, header and body documented)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serving_harness import CHURN, IRIS, PRICE, LiveServer, ServingProject, running_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
"""What the document promises. Not whether a schema-valid body is accepted: a schema cannot
say which feature a model takes, so random tensors are rightly refused with a documented 400."""

SERVED = (IRIS, CHURN, PRICE)
EXAMPLES = 25
"""Generated cases per operation (about 25 operations)."""


@pytest.fixture(scope="module")
def documented_server(
    serving_project: ServingProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server of its own: generated calls may unload its models."""
    with running_server(
        serving_project.root, log_dir=tmp_path_factory.mktemp("schemathesis-server")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def api_schema(documented_server: LiveServer, serving_project: ServingProject) -> Any:
    """The live server's OpenAPI document, with real model names mixed into the generated paths
    (random names would all end in 404)."""
    loaded = schemathesis.openapi.from_url(f"{documented_server.url}/openapi.json")
    rng = random.Random(7)

    @loaded.hook
    def map_path_parameters(_context: Any, path_parameters: dict[str, Any] | None) -> Any:
        if not path_parameters or rng.random() < 0.25:
            return path_parameters
        name = rng.choice(SERVED)
        if "model_name" in path_parameters:
            path_parameters["model_name"] = name
        if "model_version" in path_parameters:
            path_parameters["model_version"] = serving_project.versions[name]
        return path_parameters

    return loaded


def test_every_answer_is_what_the_document_says(api_schema: Any) -> None:
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 20  # every documented operation is exercised
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            check()
        except Exception as error:  # one operation's findings; the others still run
            failures.append(f"{operation.label}: {error}")
    assert failures == [], "\n\n".join(failures)
