"""mlserve: from a trained model to a fast, monitored prediction service.

The Python SDK (``register``, ``load``, ``train``, ``Client``) loads on first use, so
``import mlserve`` stays light: it imports neither pandas nor scikit-learn. Their types are
in ``__init__.pyi`` (every layer imports this package for ``__version__``, so it may not import
the SDK, not even for type checking).
"""

from importlib.metadata import PackageNotFoundError, version

from mlserve.lazy import lazy_names

try:
    __version__ = version("mlserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_SDK = ("Client", "LoadedModel", "load", "register", "train")
"""Names of the SDK (``mlserve.sdk``), which loads each on first use (as ``__init__.pyi``
declares them)."""

__all__ = ["Client", "LoadedModel", "__version__", "load", "register", "train"]

__getattr__ = lazy_names(__name__, dict.fromkeys(_SDK, "mlserve.sdk"))
