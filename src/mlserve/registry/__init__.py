"""The model registry: versions, aliases, rollouts, training runs and their artifacts."""

from mlserve.registry.artifacts import ArtifactStore
from mlserve.registry.rollouts import Rollout, RolloutEvent, RolloutLimits
from mlserve.registry.store import (
    AliasEvent,
    ModelInfo,
    ModelVersion,
    NewVersion,
    RegistryStore,
    TrainingRun,
    VersionEvent,
)

__all__ = [
    "AliasEvent",
    "ArtifactStore",
    "ModelInfo",
    "ModelVersion",
    "NewVersion",
    "RegistryStore",
    "Rollout",
    "RolloutEvent",
    "RolloutLimits",
    "TrainingRun",
    "VersionEvent",
]
