"""The model registry: versions, aliases, training runs and their artifacts."""

from mlserve.registry.artifacts import ArtifactStore
from mlserve.registry.store import (
    AliasEvent,
    ModelInfo,
    ModelVersion,
    NewVersion,
    RegistryStore,
    TrainingRun,
)

__all__ = [
    "AliasEvent",
    "ArtifactStore",
    "ModelInfo",
    "ModelVersion",
    "NewVersion",
    "RegistryStore",
    "TrainingRun",
]
