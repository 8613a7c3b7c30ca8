"""Monitoring: data profiles now; metrics, the prediction log and drift as they land."""

from mlserve.monitoring.profile import (
    build_reference_profile,
    describe_features,
    feature_kind,
    fingerprint_frame,
)

__all__ = ["build_reference_profile", "describe_features", "feature_kind", "fingerprint_frame"]
