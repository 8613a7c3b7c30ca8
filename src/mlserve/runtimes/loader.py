"""Pick the runtime for a version folder by its manifest's framework, after verifying it."""

from __future__ import annotations

from pathlib import Path

from mlserve.errors import ArtifactError
from mlserve.runtimes.base import Runtime
from mlserve.runtimes.sklearn import SklearnRuntime
from mlserve.types import verify_artifact

RUNTIMES: dict[str, type[Runtime]] = {
    SklearnRuntime.framework: SklearnRuntime,
}
"""Framework name -> runtime class; a new framework adds one module and one line here."""


def load_runtime(
    folder: Path, *, expected_sha256: str | None = None, safe: bool = False
) -> Runtime:
    """Verify a version folder's sha256 and load it with its framework's runtime.

    Raises ArtifactIntegrityError on a changed file, ArtifactError for an unknown framework or
    an unreadable file, UnsafeArtifact when ``safe`` refuses it.
    """
    manifest = verify_artifact(folder, expected_sha256)
    runtime_class = RUNTIMES.get(manifest.framework)
    if runtime_class is None:
        raise ArtifactError(
            f"no runtime for framework {manifest.framework!r} (known: {', '.join(sorted(RUNTIMES))})"
        )
    return runtime_class.load(folder, manifest, safe=safe)
