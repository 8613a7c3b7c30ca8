"""mlserve: from a trained model to a fast, monitored prediction service."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
