"""The Python SDK: register, load and train models in the registry, and ask a server for
predictions.

    import mlserve

    version = mlserve.register(model, name="churn", signature_from=train_frame, alias="staging")
    model = mlserve.load("churn@staging")          # verified, with its signature
    model.predict(frame)                          # checked as the server checks rows
    with mlserve.Client("http://127.0.0.1:8080", api_key=key) as client:
        client.predict("churn", frame)            # a DataFrame, over binary tensors

The names load on first use: the client does not import scikit-learn, and ``import mlserve``
imports neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.lazy import lazy_names

if TYPE_CHECKING:
    from mlserve.sdk.client import Client
    from mlserve.sdk.loaded import LoadedModel
    from mlserve.sdk.local import load, register, train

_HOMES = {
    "Client": "mlserve.sdk.client",
    "LoadedModel": "mlserve.sdk.loaded",
    "load": "mlserve.sdk.local",
    "register": "mlserve.sdk.local",
    "train": "mlserve.sdk.local",
}

__all__ = ["Client", "LoadedModel", "load", "register", "train"]

__getattr__ = lazy_names(__name__, _HOMES)
