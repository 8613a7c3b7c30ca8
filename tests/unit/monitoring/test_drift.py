"""Drift statistics: shifted data is found, unshifted data is not, and the edges hold."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from drift_data import churn_label, customers, reference_of, window_check
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlserve.monitoring import build_reference_profile
from mlserve.monitoring.drift import (
    MISSING,
    PREDICTION,
    UNSEEN,
    DriftCheck,
    DriftConfig,
    Reference,
    detect_drift,
    holm,
    pool_rare_bins,
    population_stability_index,
    prediction_kind,
)
from mlserve.types import Feature, Signature

ALPHA = 0.05
CONFIG = DriftConfig(alpha=ALPHA, min_rows=100)
WINDOW_ROWS = 400


@pytest.fixture(scope="module")
def reference() -> Reference:
    """The reference of 3,000 training customers (profile sample: 1,000 rows)."""
    return reference_of(customers(3000, seed=0))


# -- shifted on purpose: found -------------------------------------------------------------------


def test_a_mean_shift_in_a_numeric_feature_is_found(reference: Reference) -> None:
    window = customers(WINDOW_ROWS, seed=1, monthly_shift=5.0)  # half a standard deviation
    report = detect_drift(window_check(reference, window), CONFIG)
    monthly = next(f for f in report.features if f.name == "monthly")
    assert monthly.method == "ks"
    assert monthly.drifted
    assert monthly.corrected_p_value is not None
    assert monthly.corrected_p_value < ALPHA
    assert monthly.statistic is not None
    assert monthly.statistic > 0.1
    assert report.detected
    assert report.status == "drift"
    assert {"tenure", "plan", "region", "score"}.isdisjoint(
        f.name for f in report.features if f.drifted
    )


def test_a_changed_category_mix_is_found_with_chi_square_and_psi(reference: Reference) -> None:
    window = customers(WINDOW_ROWS, seed=2, plan_mix=(0.2, 0.3, 0.5))
    report = detect_drift(window_check(reference, window), CONFIG)
    plan = next(f for f in report.features if f.name == "plan")
    assert plan.method == "chi2+psi"
    assert plan.drifted
    assert plan.statistic is not None
    assert plan.statistic >= 0.2  # PSI: a significant shift by the usual rule of thumb
    assert plan.chi2 is not None
    assert plan.chi2 > 0
    assert report.share_drifted == pytest.approx(1 / 5)


def test_shifted_predictions_are_found(reference: Reference) -> None:
    window = customers(WINDOW_ROWS, seed=3)
    check = window_check(reference, window)
    # The model now answers "yes" far more often than it did on the reference sample.
    flipped = pd.Series(np.where(np.arange(WINDOW_ROWS) % 4 == 0, "no", "yes"))
    report = detect_drift(replace(check, predictions=flipped), CONFIG)
    assert report.prediction is not None
    assert report.prediction.drifted
    assert report.detected
    assert report.share_drifted == 0.0  # the inputs did not move: the share counts inputs only


def test_shifted_regression_predictions_are_found_with_ks() -> None:
    training = customers(2000, seed=4)
    reference = Reference.from_profile(build_reference_profile(training))
    reference = reference.with_predictions(reference.frame["monthly"] * 2.0, "numeric")
    window = customers(WINDOW_ROWS, seed=5)
    steady = DriftCheck("price", "1", reference, window, window["monthly"] * 2.0)
    shifted = DriftCheck("price", "1", reference, window, window["monthly"] * 2.0 + 8.0)
    steady_report = detect_drift(steady, CONFIG)
    shifted_report = detect_drift(shifted, CONFIG)
    assert steady_report.prediction is not None
    assert steady_report.prediction.method == "ks"
    assert not steady_report.prediction.drifted
    assert shifted_report.prediction is not None
    assert shifted_report.prediction.drifted


def test_a_flood_of_unseen_categories_is_found_as_one_pooled_bin(reference: Reference) -> None:
    window = customers(WINDOW_ROWS, seed=6)
    window.loc[: WINDOW_ROWS // 3, "region"] = [f"new-{i}" for i in range(WINDOW_ROWS // 3 + 1)]
    report = detect_drift(window_check(reference, window), CONFIG)
    region = next(f for f in report.features if f.name == "region")
    assert region.drifted
    assert region.reference_rows == 3000


# -- unshifted: not found --------------------------------------------------------------------------


def test_unshifted_windows_raise_few_false_alarms_over_many_seeds(reference: Reference) -> None:
    """Holm keeps the family-wise false-alarm rate at or below alpha: over 50 windows from the
    training distribution, about 2.5 alarms are expected; more than 7 (2 x alpha x 50 + 2)
    would mean the correction or a test is broken (P < 0.001 if the rate really were alpha)."""
    seeds = range(100, 150)
    alarms = [
        seed
        for seed in seeds
        if detect_drift(window_check(reference, customers(WINDOW_ROWS, seed)), CONFIG).detected
    ]
    assert len(alarms) <= 2 * ALPHA * len(seeds) + 2, alarms


def test_without_correction_the_same_windows_would_alarm_more_often(reference: Reference) -> None:
    """The bound above can fail: uncorrected, six tests each at alpha alarm in ~20 % of windows."""
    seeds = range(100, 150)
    uncorrected = 0
    for seed in seeds:
        report = detect_drift(window_check(reference, customers(WINDOW_ROWS, seed)), CONFIG)
        uncorrected += any(f.p_value is not None and f.p_value < ALPHA for f in report.features)
    assert uncorrected > 2 * ALPHA * len(seeds) + 2


def test_a_significant_but_tiny_categorical_shift_is_not_drift_below_the_psi_line() -> None:
    """In a big window chi-square finds a 2-point move; PSI (far below 0.1) says it is noise."""
    training = pd.DataFrame({"plan": ["basic"] * 5000 + ["pro"] * 5000})
    reference = Reference.from_profile(build_reference_profile(training))
    window = pd.DataFrame({"plan": ["basic"] * 26_000 + ["pro"] * 24_000})
    report = detect_drift(DriftCheck("m", "1", reference, window), CONFIG)
    plan = report.features[0]
    assert plan.corrected_p_value is not None
    assert plan.corrected_p_value < 0.001
    assert plan.statistic is not None
    assert plan.statistic < 0.01
    assert not plan.drifted


# -- edges -------------------------------------------------------------------------------------------


def test_too_few_rows_report_insufficient_data_and_nothing_drifted(reference: Reference) -> None:
    window = customers(99, seed=7, monthly_shift=30.0)
    report = detect_drift(window_check(reference, window), CONFIG)
    assert report.status == "insufficient data"
    assert not report.detected
    assert report.features == ()
    assert report.window_rows == 99


def test_a_feature_missing_from_the_log_is_skipped_not_failed(reference: Reference) -> None:
    window = customers(WINDOW_ROWS, seed=8).drop(columns=["score"])  # redacted
    report = detect_drift(window_check(reference, window), CONFIG)
    score = next(f for f in report.features if f.name == "score")
    assert score.method == "skipped"
    assert "not in the prediction log" in score.note
    assert score.p_value is None
    assert not score.drifted
    assert len([f for f in report.features if f.is_tested]) == 5


def test_a_few_unseen_and_missing_values_do_not_break_or_flag_chi_square(
    reference: Reference,
) -> None:
    window = customers(WINDOW_ROWS, seed=9)
    window.loc[0, "region"] = "atlantis"
    window.loc[1, "region"] = None
    report = detect_drift(window_check(reference, window), CONFIG)  # warnings are errors here
    region = next(f for f in report.features if f.name == "region")
    assert region.p_value is not None
    assert not region.drifted


def test_rare_bins_are_pooled_until_every_expected_count_is_at_least_five() -> None:
    table = np.array([[500.0, 300.0, 40.0, 20.0, 0.0], [50.0, 30.0, 4.0, 2.0, 3.0]])
    pooled = pool_rare_bins(table)
    assert pooled.sum() == table.sum()
    expected = np.outer(pooled.sum(axis=1), pooled.sum(axis=0)) / pooled.sum()
    assert expected.min() >= 5.0
    assert pooled.shape[1] == 3  # the big two, and the three rare ones together


def test_one_bin_left_after_pooling_means_no_evidence() -> None:
    reference = Reference.from_profile(build_reference_profile(pd.DataFrame({"c": ["a"] * 200})))
    report = detect_drift(DriftCheck("m", "1", reference, pd.DataFrame({"c": ["a"] * 150})), CONFIG)
    assert report.features[0].p_value == 1.0
    assert not report.detected


def test_profile_counts_keep_missing_values_and_the_truncated_tail() -> None:
    training = pd.DataFrame({"plan": ["basic", "pro", None, "basic"] * 50})
    reference = Reference.from_profile(build_reference_profile(training))
    assert reference.counts["plan"] == {"basic": 100, "pro": 50, MISSING: 50}
    profile = build_reference_profile(training)
    profile["features"]["plan"]["frequencies"] = {"basic": 100}  # as if "pro" fell off the top
    assert Reference.from_profile(profile).counts["plan"] == {"basic": 100, UNSEEN: 50, MISSING: 50}


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    same = population_stability_index(np.array([500.0, 300.0, 200.0]), np.array([50.0, 30.0, 20.0]))
    small = population_stability_index(
        np.array([500.0, 300.0, 200.0]), np.array([45.0, 30.0, 25.0])
    )
    large = population_stability_index(
        np.array([500.0, 300.0, 200.0]), np.array([20.0, 30.0, 50.0])
    )
    assert same == pytest.approx(0.0, abs=1e-3)
    assert 0 < small < large
    assert large > 0.2


def test_holm_adjusts_like_the_textbook() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_prediction_kind_follows_the_task() -> None:
    inputs = (Feature("x", "float64"),)
    assert prediction_kind(Signature(inputs, "classification", classes=("a", "b"))) == "categorical"
    assert prediction_kind(Signature(inputs, "regression")) == "numeric"
    assert prediction_kind(Signature(inputs, None, classes=(0, 1))) == "categorical"


def test_the_report_is_plain_json(reference: Reference) -> None:
    report = detect_drift(window_check(reference, customers(WINDOW_ROWS, seed=10)), CONFIG)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["status"] == "no drift"
    assert [f["name"] for f in data["features"]] == [
        "monthly",
        "tenure",
        "plan",
        "region",
        "score",
        PREDICTION,
    ]


# -- properties ---------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shift=st.floats(-20, 20),
    mix=st.tuples(st.floats(0.05, 1), st.floats(0.05, 1), st.floats(0.05, 1)),
    rows=st.integers(5, 300),
    seed=st.integers(0, 2**16),
    order_seed=st.integers(0, 2**16),
)
def test_p_values_are_probabilities_and_the_report_ignores_row_order(
    reference: Reference,
    shift: float,
    mix: tuple[float, float, float],
    rows: int,
    seed: int,
    order_seed: int,
) -> None:
    shares = tuple(m / sum(mix) for m in mix)
    window = customers(rows, seed, monthly_shift=shift, plan_mix=shares)  # type: ignore[arg-type]
    config = DriftConfig(alpha=ALPHA, min_rows=5)
    report = detect_drift(window_check(reference, window), config)
    for feature in report.features:
        assert feature.p_value is not None
        assert feature.corrected_p_value is not None
        assert 0.0 <= feature.p_value <= feature.corrected_p_value <= 1.0
        assert feature.statistic is not None
        assert feature.statistic >= 0.0
    shuffled = window.sample(frac=1.0, random_state=order_seed).reset_index(drop=True)
    again = detect_drift(
        DriftCheck("churn", "1", reference, shuffled, pd.Series(churn_label(shuffled))), config
    )
    assert again.to_dict() == report.to_dict()


@given(st.lists(st.floats(0, 1), max_size=30))
def test_holm_never_lowers_a_p_value_and_keeps_their_order(p_values: list[float]) -> None:
    adjusted = holm(p_values)
    assert all(raw <= adj <= 1.0 for raw, adj in zip(p_values, adjusted, strict=True))
    by_raw = sorted(range(len(p_values)), key=lambda i: p_values[i])
    assert all(adjusted[a] <= adjusted[b] for a, b in itertools.pairwise(by_raw))
