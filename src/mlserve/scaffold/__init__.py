"""What `mlserve init` writes."""

from mlserve.scaffold.project import (
    MONITORING_FILES,
    SAMPLE_DATASET,
    SAMPLE_TARGET,
    InitResult,
    env_example,
    init_project,
    sample_dataset,
    template_path,
)

__all__ = [
    "MONITORING_FILES",
    "SAMPLE_DATASET",
    "SAMPLE_TARGET",
    "InitResult",
    "env_example",
    "init_project",
    "sample_dataset",
    "template_path",
]
