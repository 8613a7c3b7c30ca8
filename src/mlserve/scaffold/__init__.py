"""What `mlserve init` writes."""

from mlserve.scaffold.kubernetes import KUBERNETES_FILES, DeploySpec, write_manifests
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
    "KUBERNETES_FILES",
    "MONITORING_FILES",
    "SAMPLE_DATASET",
    "SAMPLE_TARGET",
    "DeploySpec",
    "InitResult",
    "env_example",
    "init_project",
    "sample_dataset",
    "template_path",
    "write_manifests",
]
