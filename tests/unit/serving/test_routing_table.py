"""One routing table: the fast path serves exactly the inference routes FastAPI declares, and
resolves every path to the endpoint and parameters FastAPI's own router would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

from mlserve.serving import create_app, routes_repository, routes_v1, routes_v2
from mlserve.serving.app import INFERENCE_ENDPOINTS
from mlserve.serving.fastpath import FastPathMiddleware, inference_routes
from mlserve.settings import Settings

ROUTERS = [routes_v2.router, routes_v1.router, routes_repository.router]
"""Every router whose POST routes could compete for a path."""
INFERENCE_PATHS = {
    "/v2/models/{model_name}/infer",
    "/v2/models/{model_name}/versions/{model_version}/infer",
    "/v1/models/{model_name}:predict",
    "/v1/models/{model_name}/versions/{model_version}:predict",
    "/invocations",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The real server application, with no model (routing needs none)."""
    return create_app(Settings(home=tmp_path_factory.mktemp("home")), [])


def declared_route(path: str) -> tuple[Any, dict[str, str]] | None:
    """The endpoint and path parameters of the first route the routers declare for a POST to
    ``path``, matched as Starlette matches routes (the order FastAPI tries them in)."""
    scope = {"type": "http", "method": "POST", "path": path, "root_path": ""}
    for router in ROUTERS:
        for route in router.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                assert isinstance(route, APIRoute)
                return route.endpoint, child["path_params"]
    return None


def test_the_fast_path_serves_exactly_the_documented_inference_routes(app: FastAPI) -> None:
    routes = inference_routes(ROUTERS, INFERENCE_ENDPOINTS)
    assert {r.path for r in routes} == INFERENCE_PATHS
    documented = {path for path, ops in app.openapi()["paths"].items() if "post" in ops}
    assert documented >= INFERENCE_PATHS


@pytest.mark.parametrize(
    ("path", "endpoint", "params"),
    [
        ("/v2/models/iris/infer", routes_v2.infer, {"model_name": "iris"}),
        (
            "/v2/models/iris/versions/12/infer",
            routes_v2.infer_version,
            {"model_name": "iris", "model_version": "12"},
        ),
        ("/v1/models/my.model-2:predict", routes_v1.predict, {"model_name": "my.model-2"}),
        (
            "/v1/models/iris/versions/3:predict",
            routes_v1.predict_version,
            {"model_name": "iris", "model_version": "3"},
        ),
        ("/invocations", routes_v1.invocations, {}),
    ],
)
def test_the_fast_path_resolves_a_path_as_fastapi_does(
    app: FastAPI, path: str, endpoint: Any, params: dict[str, str]
) -> None:
    fast = FastPathMiddleware(app, inference_routes(ROUTERS, INFERENCE_ENDPOINTS))
    assert fast._find(path) == (endpoint, params)
    assert declared_route(path) == (endpoint, params)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/iris/feedback",
        "/v2/repository/index",
        "/v2/repository/models/iris/load",
        "/v2/models/iris/infer/extra",
        "/v1/models/iris:explain",
        "/v2/models//infer",
    ],
)
def test_the_fast_path_leaves_every_other_post_to_fastapi(app: FastAPI, path: str) -> None:
    fast = FastPathMiddleware(app, inference_routes(ROUTERS, INFERENCE_ENDPOINTS))
    assert fast._find(path) is None
    resolved = declared_route(path)
    assert resolved is None or resolved[0] not in INFERENCE_ENDPOINTS


def test_no_source_file_keeps_a_second_routing_table() -> None:
    # The fast path used to keep its own regular expressions beside FastAPI's routes.
    source = (Path(routes_v1.__file__).parent / "fastpath.py").read_text()
    assert "re.compile" not in source
