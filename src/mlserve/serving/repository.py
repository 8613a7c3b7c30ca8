"""The model repository extension (Triton's and KServe's) below its doors: list, load and unload
model versions while the server runs, the same over REST (`routes_repository`) and gRPC.

These change what is served, so only the admin key may call them (`access.AccessKeys`).
Loading or unloading never changes the server's readiness.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlserve.errors import InvalidInput
from mlserve.serving.models import ModelManager, VersionStatus

STATES = {
    "ready": "READY",
    "loading": "LOADING",
    "failed": "UNAVAILABLE",
    "unloaded": "UNAVAILABLE",
}
"""Our version states in the protocol's words."""


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One version in the repository index."""

    name: str
    version: str
    state: str
    reason: str

    @classmethod
    def of(cls, status: VersionStatus) -> IndexRow:
        """The row of a version's status (an unloaded version's reason is 'unloaded')."""
        reason = status.reason or ("unloaded" if status.state == "unloaded" else "")
        return cls(status.name, status.version, STATES[status.state], reason)


def index(models: ModelManager, *, ready_only: bool) -> list[IndexRow]:
    """Every version this server serves, loads, failed to load or unloaded (only the ready ones
    with ``ready_only``)."""
    return [
        IndexRow.of(status)
        for status in models.statuses(unloaded=True)
        if status.is_ready or not ready_only
    ]


async def load(models: ModelManager, name: str, version: str | None) -> list[IndexRow]:
    """Serve a registered model: what its references point at now (followed from then on), or
    one version beside the others; raises InvalidInput with the reason when a version fails to
    load (what was served goes on serving)."""
    statuses = await models.load_model(name, version)
    failed = [s for s in statuses if not s.is_ready]
    if failed:
        reasons = "; ".join(f"version {s.version}: {s.reason}" for s in failed)
        raise InvalidInput(f"failed to load model {name!r}: {reasons}")
    return [IndexRow.of(s) for s in statuses]


async def unload(models: ModelManager, name: str, version: str | None) -> list[IndexRow]:
    """Stop serving a model (or one version): requests it already took are answered, then its
    memory goes. An unloaded model is no longer followed until it is loaded again."""
    return [IndexRow.of(s) for s in await models.unload(name, version)]


def checked_version(version: object) -> str | None:
    """The ``version`` parameter of a load or unload: a version number, or None for none."""
    if version is None:
        return None
    if isinstance(version, bool) or not str(version).isdigit():
        raise InvalidInput(f"parameters.version must be a version number, got {version!r}")
    return str(version)
