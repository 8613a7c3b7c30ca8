# Types of mlserve/__init__.py, whose SDK names load on first use (PEP 562).
from mlserve.sdk.client import Client as Client
from mlserve.sdk.loaded import LoadedModel as LoadedModel
from mlserve.sdk.local import load as load
from mlserve.sdk.local import register as register
from mlserve.sdk.local import train as train

__version__: str
__all__ = ["Client", "LoadedModel", "__version__", "load", "register", "train"]
