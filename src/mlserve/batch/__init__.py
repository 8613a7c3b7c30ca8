"""Batch prediction: streaming, resumable, exactly-once scoring of files, locally or on Dask.

The names below load on first use: importing ``mlserve.batch.forkserver`` alone (which the CLI
does first, to start worker processes while the rest imports) must not import pandas, pyarrow
and scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.lazy import lazy_names

if TYPE_CHECKING:
    from mlserve.batch.jobs import (
        DEFAULT_CHUNK_ROWS,
        EngineName,
        JobSpec,
        JobSummary,
        Progress,
        run,
    )
    from mlserve.batch.pinning import PinnedModel, pin_model
    from mlserve.batch.writers import OutputFormat

_HOMES = {
    "DEFAULT_CHUNK_ROWS": "mlserve.batch.jobs",
    "EngineName": "mlserve.batch.jobs",
    "JobSpec": "mlserve.batch.jobs",
    "JobSummary": "mlserve.batch.jobs",
    "Progress": "mlserve.batch.jobs",
    "run": "mlserve.batch.jobs",
    "PinnedModel": "mlserve.batch.pinning",
    "pin_model": "mlserve.batch.pinning",
    "OutputFormat": "mlserve.batch.writers",
}

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


__getattr__ = lazy_names(__name__, _HOMES)
