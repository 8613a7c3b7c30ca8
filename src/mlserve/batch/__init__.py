"""Batch prediction: streaming, resumable, exactly-once scoring of files, locally or on Dask."""

from mlserve.batch.jobs import DEFAULT_CHUNK_ROWS, EngineName, JobSpec, JobSummary, Progress, run
from mlserve.batch.pinning import PinnedModel, pin_model
from mlserve.batch.writers import OutputFormat

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "EngineName",
    "JobSpec",
    "JobSummary",
    "OutputFormat",
    "PinnedModel",
    "Progress",
    "pin_model",
    "run",
]
