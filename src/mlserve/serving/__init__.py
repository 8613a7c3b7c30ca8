"""The inference server: Open Inference Protocol v2 (REST and gRPC), a simple JSON API and MLflow
scoring.

``check_grpc_port`` loads on first use: grpc is imported only by servers that listen for it.
"""

from typing import TYPE_CHECKING

from mlserve.lazy import lazy_names
from mlserve.serving.app import app_from_environment, build_app, create_app
from mlserve.serving.models import discover_model_dir, resolve_refs
from mlserve.serving.served import ModelSource
from mlserve.serving.server import (
    ServeOptions,
    check_http_port,
    serve_single,
    serve_workers,
    warn_if_exposed,
)

if TYPE_CHECKING:
    from mlserve.serving.grpc import check_grpc_port

__all__ = [
    "ModelSource",
    "ServeOptions",
    "app_from_environment",
    "build_app",
    "check_grpc_port",
    "check_http_port",
    "create_app",
    "discover_model_dir",
    "resolve_refs",
    "serve_single",
    "serve_workers",
    "warn_if_exposed",
]

__getattr__ = lazy_names(__name__, {"check_grpc_port": "mlserve.serving.grpc"})
