"""Prometheus instruments with stable names, built on a registry the caller passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Request latency buckets: 0.5 ms to 10 s."""
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
"""Rows per predict call."""


@dataclass(frozen=True, slots=True)
class ServingMetrics:
    """Every instrument the server updates. Label values are low-cardinality by design."""

    requests: Counter
    errors: Counter
    latency: Histogram
    in_flight: Gauge
    load_seconds: Gauge
    model_ready: Gauge
    predictions: Counter
    rows: Counter
    queue_depth: Gauge
    queue_wait: Histogram
    batch_size: Histogram
    rejected: Counter
    cache_hits: Counter
    cache_misses: Counter
    cache_errors: Counter
    unknown_categories: Counter
    reloads: Counter
    routed: Counter
    rollout_weight: Gauge
    rollbacks: Counter
    shadow_requests: Counter
    shadow_rows: Counter
    shadow_abs_difference: Counter
    shadow_latency: Histogram
    registry_up: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ServingMetrics:
        """Register the instruments on ``registry`` (tests use a fresh one each)."""
        request_labels = ("model", "version", "protocol", "status")
        return cls(
            requests=Counter(
                "mlserve_requests",
                "Requests answered, by model, version, protocol and status code.",
                request_labels,
                registry=registry,
            ),
            errors=Counter(
                "mlserve_request_errors",
                "Requests answered with a 4xx or 5xx status.",
                request_labels,
                registry=registry,
            ),
            latency=Histogram(
                "mlserve_request_duration_seconds",
                "Time from receiving a request to sending its response.",
                ("model", "version", "protocol"),
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            in_flight=Gauge(
                "mlserve_requests_in_flight",
                "Requests being handled right now.",
                ("protocol",),
                registry=registry,
                multiprocess_mode="livesum",
            ),
            load_seconds=Gauge(
                "mlserve_model_load_seconds",
                "Seconds it took to load and warm a model version.",
                ("model", "version"),
                registry=registry,
                multiprocess_mode="max",
            ),
            model_ready=Gauge(
                "mlserve_model_ready",
                "1 when the model version is loaded and warmed, else 0.",
                ("model", "version"),
                registry=registry,
                multiprocess_mode="min",
            ),
            predictions=Counter(
                "mlserve_predictions",
                "Predicted rows by class label (regressors count under class '').",
                ("model", "version", "class"),
                registry=registry,
            ),
            rows=Counter(
                "mlserve_rows",
                "Rows predicted.",
                ("model", "version"),
                registry=registry,
            ),
            queue_depth=Gauge(
                "mlserve_queue_depth",
                "Rows waiting in the model's batching queue.",
                ("model", "version"),
                registry=registry,
                multiprocess_mode="livesum",
            ),
            queue_wait=Histogram(
                "mlserve_queue_wait_seconds",
                "Time a request waited in the batching queue before its predict call started.",
                ("model", "version"),
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            batch_size=Histogram(
                "mlserve_batch_size",
                "Rows per predict call after batching.",
                ("model", "version"),
                buckets=BATCH_SIZE_BUCKETS,
                registry=registry,
            ),
            rejected=Counter(
                "mlserve_rejected_requests",
                "Requests refused before computing: queue full (overloaded) or deadline passed.",
                ("model", "version", "reason"),
                registry=registry,
            ),
            cache_hits=Counter(
                "mlserve_cache_hits",
                "Requests answered from the prediction cache.",
                ("model", "version"),
                registry=registry,
            ),
            cache_misses=Counter(
                "mlserve_cache_misses",
                "Cacheable requests that had to be computed.",
                ("model", "version"),
                registry=registry,
            ),
            cache_errors=Counter(
                "mlserve_cache_errors",
                "Requests answered without the shared (Redis) cache because Redis was down, "
                "slow or refusing (0 for in-process caches).",
                ("model", "version"),
                registry=registry,
            ),
            unknown_categories=Counter(
                "mlserve_unknown_categories",
                "Rows scored with a category training never saw (unknown_categories: accept).",
                ("model", "version", "feature"),
                registry=registry,
            ),
            reloads=Counter(
                "mlserve_model_loads",
                "Versions loaded (result=loaded) or that failed to load (result=failed), at "
                "start-up and when an alias moves.",
                ("model", "result"),
                registry=registry,
            ),
            routed=Counter(
                "mlserve_routed_requests",
                "Requests for a model with an active rollout, by the version that answered and "
                "why (production, canary, sticky, explicit).",
                ("model", "version", "route"),
                registry=registry,
            ),
            rollout_weight=Gauge(
                "mlserve_rollout_weight_percent",
                "Share of a model's requests its rollout sends to each version (canary), and "
                "mirrors to it (shadow); 0 when no rollout is active.",
                ("model", "version", "kind"),
                registry=registry,
                multiprocess_mode="max",
            ),
            rollbacks=Counter(
                "mlserve_rollout_rollbacks",
                "Rollouts this server rolled back because the candidate broke a guardrail.",
                ("model",),
                registry=registry,
            ),
            shadow_requests=Counter(
                "mlserve_shadow_requests",
                "Requests mirrored to a rollout's shadow version, by result: compared, failed "
                "(the shadow raised; the client never sees it), dropped (its lane was full).",
                ("model", "version", "result"),
                registry=registry,
            ),
            shadow_rows=Counter(
                "mlserve_shadow_rows",
                "Rows the shadow version predicted, by whether its predicted class agreed with "
                "the answer sent (classifiers; agreement=value for regressors).",
                ("model", "version", "agreement"),
                registry=registry,
            ),
            shadow_abs_difference=Counter(
                "mlserve_shadow_abs_difference",
                "Sum over rows of |shadow prediction - answer sent| (regressors): divided by "
                "mlserve_shadow_rows_total it is the mean absolute difference.",
                ("model", "version"),
                registry=registry,
            ),
            shadow_latency=Histogram(
                "mlserve_shadow_predict_duration_seconds",
                "Predict time of mirrored requests: arm=shadow for the shadow version (the "
                "version label; the predict call of the chunk the request was mirrored in), "
                "arm=primary for the version that answered the same requests.",
                ("model", "version", "arm"),
                buckets=LATENCY_BUCKETS_S,
                registry=registry,
            ),
            registry_up=Gauge(
                "mlserve_registry_up",
                "0 while the server cannot read its registry (loaded models keep serving), "
                "else 1 (also for a server of a model folder, which has no registry).",
                registry=registry,
                multiprocess_mode="livemin",
            ),
        )


@dataclass(frozen=True, slots=True)
class MonitoringMetrics:
    """Instruments of the prediction log, feedback and drift detection.

    Gauges computed from the shared database (online accuracy, drift) hold the same value in
    every worker process, so multiprocess mode keeps the most recent one rather than a sum.
    """

    log_queue_depth: Gauge
    log_written: Counter
    log_dropped: Counter
    feedback: Counter
    feedback_unknown: Counter
    online_accuracy: Gauge
    online_f1: Gauge
    online_mae: Gauge
    online_labelled_rows: Gauge
    online_accuracy_floor: Gauge
    drift_statistic: Gauge
    drift_p_value: Gauge
    drift_detected: Gauge
    drift_share: Gauge
    drift_window_rows: Gauge
    drift_last_run: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MonitoringMetrics:
        """Register the instruments on ``registry``."""
        version = ("model", "version")
        feature = ("model", "version", "feature")

        def gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode="mostrecent")

        return cls(
            log_queue_depth=Gauge(
                "mlserve_prediction_log_queue_depth",
                "Prediction records waiting to be written to the prediction log.",
                registry=registry,
                multiprocess_mode="livesum",
            ),
            log_written=Counter(
                "mlserve_prediction_log_written",
                "Prediction records written to the prediction log.",
                version,
                registry=registry,
            ),
            log_dropped=Counter(
                "mlserve_prediction_log_dropped",
                "Prediction records dropped because the log queue was full (when_full=drop).",
                version,
                registry=registry,
            ),
            feedback=Counter(
                "mlserve_feedback",
                "Ground-truth labels received and joined to logged predictions.",
                version,
                registry=registry,
            ),
            feedback_unknown=Counter(
                "mlserve_feedback_unknown",
                "Feedback whose request id matched no logged prediction.",
                ("model",),
                registry=registry,
            ),
            online_accuracy=gauge(
                "mlserve_online_accuracy",
                "Accuracy of labelled predictions in the feedback window (classifiers).",
                version,
            ),
            online_f1=gauge(
                "mlserve_online_f1",
                "Macro F1 of labelled predictions in the feedback window (classifiers).",
                version,
            ),
            online_mae=gauge(
                "mlserve_online_mae",
                "Mean absolute error of labelled predictions in the feedback window (regressors).",
                version,
            ),
            online_labelled_rows=gauge(
                "mlserve_online_labelled_rows",
                "Labelled predictions in the feedback window.",
                version,
            ),
            online_accuracy_floor=gauge(
                "mlserve_online_accuracy_floor",
                "A model's configured online_accuracy_floor: the MlserveOnlineAccuracyLow alert "
                "fires below it.",
                ("model",),
            ),
            drift_statistic=gauge(
                "mlserve_drift_statistic",
                "Drift test statistic per feature (KS D, or PSI for categorical features); "
                "feature '__prediction__' is the prediction distribution.",
                feature,
            ),
            drift_p_value=gauge(
                "mlserve_drift_p_value",
                "Drift test p-value per feature, corrected for testing many features.",
                feature,
            ),
            drift_detected=gauge(
                "mlserve_drift_detected",
                "1 when the feature drifted at the configured alpha, else 0.",
                feature,
            ),
            drift_share=gauge(
                "mlserve_drift_share",
                "Share of the model's features that drifted.",
                version,
            ),
            drift_window_rows=gauge(
                "mlserve_drift_window_rows",
                "Logged rows the last drift check compared with the reference.",
                version,
            ),
            drift_last_run=gauge(
                "mlserve_drift_last_run_timestamp_seconds",
                "Unix time of the last drift check.",
                version,
            ),
        )
