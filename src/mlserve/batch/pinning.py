"""Pin the model version a job uses, so a resumed job keeps it even when an alias moves."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlserve.batch.checkpoint import JobState
from mlserve.errors import Conflict
from mlserve.types import ModelRef, Signature, read_manifest, verify_artifact

if TYPE_CHECKING:
    # Only a type here (callers pass the store in). Worker processes import this package, and
    # importing the registry would cost each of them SQLAlchemy and Alembic (~0.5 s) for
    # nothing: no cycle is hidden here, mlserve.registry never imports mlserve.batch.
    from mlserve.registry import RegistryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PinnedModel:
    """The exact version a job scores with: name, number, sha256 and a local, verified folder."""

    name: str
    version: int
    sha256: str
    folder: Path
    signature: Signature
    is_resumed: bool = False
    """True when the version came from the job's checkpoint rather than from the reference."""

    @property
    def label(self) -> str:
        """``name:version``, as written in every output row."""
        return f"{self.name}:{self.version}"

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity, for the job manifest."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    @classmethod
    def from_folder(cls, folder: Path) -> PinnedModel:
        """A self-describing version folder (``mlserve.json`` + model file), no registry needed."""
        manifest = verify_artifact(folder)
        return cls(manifest.name, manifest.version, manifest.sha256, folder, manifest.signature)


def pin_model(store: RegistryStore, ref: ModelRef | str, output: Path | str) -> PinnedModel:
    """The version ``ref`` means for the job writing ``output``.

    A new job resolves ``ref`` now. A job being resumed keeps the version it pinned when it
    started, wherever an alias points since; raises Conflict when ``ref`` names another model
    or another explicit version, or when the pinned version's file has changed.
    """
    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    output = Path(output)
    manifest = JobState.for_output(output).read_manifest()
    pinned = manifest.get("model") if manifest else None
    if not isinstance(pinned, dict):
        version = store.resolve(ref)
        folder = store.local_folder(version)
        return PinnedModel(version.name, version.version, version.sha256, folder, version.signature)
    name, number, sha256 = str(pinned["name"]), int(pinned["version"]), str(pinned["sha256"])
    if ref.name != name or (ref.version is not None and ref.version != number):
        raise Conflict(
            f"the unfinished job writing {output} scores with {name}:{number}, not {ref}; "
            f"resume it with the same reference, or delete {JobState.for_output(output).root} "
            "to start over"
        )
    version = store.get_version(name, number)
    if version.sha256 != sha256:
        raise Conflict(
            f"model {name}:{number} changed since the job writing {output} started "
            f"(sha256 {sha256[:12]}… then, {version.sha256[:12]}… now); refusing to mix models. "
            f"Delete {JobState.for_output(output).root} to start over"
        )
    folder = store.local_folder(version)
    if ref.alias is not None or ref.version is None:
        log.info("batch model pinned", extra={"model": name, "version": number, "ref": str(ref)})
    return PinnedModel(
        name, number, sha256, folder, read_manifest(folder).signature, is_resumed=True
    )
