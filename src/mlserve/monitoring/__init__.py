"""Monitoring: data profiles, metrics, the prediction log and drift.

The names below load on first use, so that a part that needs only one of them (the batch job
needs its metrics, not the prediction log and SQLAlchemy behind it) does not import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserve.lazy import lazy_names

if TYPE_CHECKING:
    from mlserve.monitoring.predlog import (
        LoggedWindow,
        PendingPrediction,
        PredictionLogStore,
        PredictionLogWriter,
        WriterConfig,
    )
    from mlserve.monitoring.profile import (
        build_reference_profile,
        describe_features,
        feature_kind,
        fingerprint_frame,
    )

_HOMES = {
    "LoggedWindow": "mlserve.monitoring.predlog",
    "PendingPrediction": "mlserve.monitoring.predlog",
    "PredictionLogStore": "mlserve.monitoring.predlog",
    "PredictionLogWriter": "mlserve.monitoring.predlog",
    "WriterConfig": "mlserve.monitoring.predlog",
    "build_reference_profile": "mlserve.monitoring.profile",
    "describe_features": "mlserve.monitoring.profile",
    "feature_kind": "mlserve.monitoring.profile",
    "fingerprint_frame": "mlserve.monitoring.profile",
}

__all__ = [
    "LoggedWindow",
    "PendingPrediction",
    "PredictionLogStore",
    "PredictionLogWriter",
    "WriterConfig",
    "build_reference_profile",
    "describe_features",
    "feature_kind",
    "fingerprint_frame",
]


__getattr__ = lazy_names(__name__, _HOMES)
