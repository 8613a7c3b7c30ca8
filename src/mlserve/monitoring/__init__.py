"""Monitoring: data profiles now; metrics, the prediction log and drift as they land."""

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
