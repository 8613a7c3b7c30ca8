"""The one tree of errors mlserve raises on purpose.

Errors say what went wrong in words a user can act on, and nothing about HTTP status codes or
exit codes: `serving/errors.py` and `cli/main.py` map them, each with one table.
"""

from __future__ import annotations


class MlserveError(Exception):
    """Base for every error we raise on purpose."""


class NotFound(MlserveError):
    """Something the user named does not exist."""


class InvalidInput(MlserveError):
    """The user's input (a reference, a dataset, a request) is malformed or inconsistent."""


class ModelRefused(InvalidInput):
    """The model itself refused rows the input checks let through (its predict raised
    ValueError): the request's fault, named by row once the refused rows are found."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Conflict(MlserveError):
    """The request contradicts the current state (e.g. a name already taken)."""


class NotReady(MlserveError):
    """A component exists but cannot answer yet (model loading, server draining)."""


class Overloaded(MlserveError):
    """Too much work queued; the caller should retry later."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(MlserveError):
    """A request waited longer than its deadline."""


class Unauthorized(MlserveError):
    """No credentials were presented."""


class Forbidden(MlserveError):
    """Credentials were presented but are not valid."""


class RegistryUnavailable(MlserveError):
    """The registry's database could not be reached."""


class ConfigError(MlserveError):
    """The configuration (file, environment, flags) is invalid."""


class MissingExtra(ConfigError):
    """A framework's optional packages are not installed (``pip install 'mlserve[xgboost]'``)."""


class ModelNotFound(NotFound):
    """No model with that name is registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} is not registered")
        self.name = name


class VersionNotFound(NotFound):
    """The model exists but not that version."""

    def __init__(self, name: str, version: int | str) -> None:
        super().__init__(f"model {name!r} has no version {version}")
        self.name, self.version = name, version


class AliasNotFound(NotFound):
    """The model exists but has no such alias."""

    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model {name!r} has no alias {alias!r}")
        self.name, self.alias = name, alias


class RolloutNotFound(NotFound):
    """The model exists but has no active rollout."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name!r} has no active rollout")
        self.name = name


class InvalidReference(InvalidInput):
    """A model reference such as ``churn@production`` could not be parsed."""


class DatasetError(InvalidInput):
    """A dataset could not be read or failed validation; ``problems`` lists every finding."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class NotBetterThanBaseline(InvalidInput):
    """A trained model does not beat the trivial baseline, and the run asked for better."""


class ArtifactError(MlserveError):
    """An artifact is missing, unreadable or of an unsupported kind."""


class ArtifactStoreUnavailable(ArtifactError):
    """The artifact store could not be reached or refused a request: may pass on its own."""


class ArtifactIntegrityError(ArtifactError):
    """An artifact's sha256 differs from the one recorded at registration."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(
            f"artifact {uri} failed its integrity check: sha256 is {actual[:12]}…, "
            f"registered as {expected[:12]}…; refusing to load a tampered or corrupted model"
        )
        self.uri, self.expected, self.actual = uri, expected, actual


class UnsafeArtifact(ArtifactError):
    """Safe loading is on and the artifact would run untrusted code when loaded."""


class PayloadTooLarge(MlserveError):
    """A request body exceeds the configured limit."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class RateLimited(MlserveError):
    """The caller sent too many requests."""
