"""What `mlserve init` writes."""

from mlserve.scaffold.project import (
    SAMPLE_DATASET,
    SAMPLE_TARGET,
    InitResult,
    env_example,
    init_project,
    sample_dataset,
)

__all__ = [
    "SAMPLE_DATASET",
    "SAMPLE_TARGET",
    "InitResult",
    "env_example",
    "init_project",
    "sample_dataset",
]
