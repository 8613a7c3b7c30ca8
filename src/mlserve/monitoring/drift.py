"""Drift tests: a window of logged inputs and predictions against a version's reference profile.

- Numeric features: two-sample Kolmogorov-Smirnov between the reference sample and the window.
- Categorical and boolean features: a chi-square test of homogeneity on category counts, with
  PSI (population stability index) as the effect size. Reference counts are the profile's
  frequencies over all training rows; categories the reference never saw are pooled into one
  ``(unseen)`` bin, missing values are a category of their own, and rare bins are merged until
  every expected count is at least 5 (Cochran's rule, below which chi-square p-values are
  unreliable). Both statistics are computed on the same bins.
- The prediction distribution: the same tests, categorical for classifiers and numeric for
  regressors, against the model's predictions on the reference sample (the caller supplies them).

Every test of one check forms one family, corrected with Holm-Bonferroni: the drift alert fires
when *any* feature drifts, so the error to control is the chance of one false alarm among all
of them (family-wise), whatever the correlation between features.

A numeric feature drifts when its corrected p-value is below alpha. A categorical one needs a
PSI of at least ``psi_min`` (0.1, the usual "moderate shift" line) as well: in a large window
chi-square finds differences far too small to matter, and PSI alone is noisy in a small one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, ks_2samp

from mlserve.types import Signature

PREDICTION = "__prediction__"
"""Name under which the prediction distribution is reported (and labelled in metrics)."""
MISSING = "(missing)"
"""The category of missing values."""
UNSEEN = "(unseen)"
"""The bin of categories the reference never saw."""
MIN_EXPECTED = 5.0
"""Smallest expected count per chi-square cell; rarer bins are pooled."""
PSI_MIN = 0.1
"""Default PSI a categorical feature needs, beyond significance, to count as drifted."""
PSI_SMOOTHING = 0.5
"""Added to every bin count in PSI, so an empty bin gives a large but finite term."""
WINDOW_ROW_LIMIT = 50_000
"""Most logged rows one check reads (the newest): enough for any test, bounded in time."""

Kind = Literal["numeric", "categorical", "boolean"]
Method = Literal["ks", "chi2+psi", "skipped"]
Status = Literal["drift", "no drift", "insufficient data"]


@dataclass(frozen=True, slots=True)
class Reference:
    """A version's reference: its sample rows, category counts, and predictions on the sample.

    ``counts`` holds each categorical or boolean feature's category counts over every training
    row (missing values as MISSING); ``prediction_kind`` says how predictions are compared.
    """

    frame: pd.DataFrame
    kinds: dict[str, Kind]
    counts: dict[str, dict[str, int]]
    rows: int
    predictions: pd.Series | None = None
    prediction_kind: Literal["numeric", "categorical"] = "categorical"

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> Reference:
        """Rebuild from a reference profile (see monitoring.profile.build_reference_profile)."""
        features: dict[str, Any] = dict(profile.get("features") or {})
        sample = profile.get("sample") or {}
        columns = list(sample.get("columns") or features)
        frame = pd.DataFrame(sample.get("rows") or [], columns=columns)
        kinds: dict[str, Kind] = {}
        counts: dict[str, dict[str, int]] = {}
        for name, stats in features.items():
            kind: Kind = stats.get("kind", "numeric")
            kinds[name] = kind
            if name not in frame.columns:
                frame[name] = pd.Series(dtype=object)
            if kind == "numeric":
                frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
            else:
                counts[name] = _profile_counts(stats, frame[name])
        return cls(frame=frame, kinds=kinds, counts=counts, rows=int(profile.get("rows", 0)))

    def with_predictions(
        self,
        predictions: Sequence[Any] | np.ndarray | pd.Series,
        kind: Literal["numeric", "categorical"],
    ) -> Reference:
        """A copy carrying the model's predictions on ``frame`` (one per sample row)."""
        return replace(self, predictions=pd.Series(np.asarray(predictions)), prediction_kind=kind)

    def batch_for(self, signature: Signature) -> pd.DataFrame | None:
        """The sample in signature order, to predict on; None when it lacks rows or features."""
        names = signature.feature_names
        if self.frame.empty or not names or any(n not in self.frame.columns for n in names):
            return None
        return self.frame[names]


def prediction_kind(signature: Signature) -> Literal["numeric", "categorical"]:
    """How a model's predictions are compared: labels of a classifier, numbers of a regressor."""
    if signature.task == "regression":
        return "numeric"
    if signature.task == "classification" or signature.classes:
        return "categorical"
    return "numeric"


@dataclass(frozen=True, slots=True)
class DriftCheck:
    """What one check compares: a reference and a window of logged inputs and predictions."""

    model: str
    version: str
    reference: Reference
    inputs: pd.DataFrame
    predictions: pd.Series | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """How strict a check is: significance level, fewest rows, smallest categorical PSI."""

    alpha: float = 0.05
    min_rows: int = 100
    psi_min: float = PSI_MIN


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    """The test of one feature (or of the predictions, named PREDICTION).

    ``statistic`` is KS D for numeric features and PSI for categorical ones; ``p_value`` is the
    KS or chi-square p-value before, ``corrected_p_value`` after the Holm correction. Skipped
    features (nothing to compare) have None there and say why in ``note``.
    """

    name: str
    kind: str
    method: Method
    statistic: float | None
    p_value: float | None
    corrected_p_value: float | None
    drifted: bool
    reference_rows: int
    current_rows: int
    chi2: float | None = None
    note: str = ""

    @property
    def is_tested(self) -> bool:
        """True when a test ran (the feature was not skipped)."""
        return self.method != "skipped"


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The outcome of one check. ``share_drifted`` counts input features only."""

    model: str
    version: str
    status: Status
    window_rows: int
    reference_rows: int
    alpha: float
    min_rows: int
    features: tuple[FeatureDrift, ...] = ()
    share_drifted: float = 0.0
    detected: bool = False
    since: datetime | None = None
    until: datetime | None = None
    psi_min: float = PSI_MIN

    @property
    def inputs(self) -> tuple[FeatureDrift, ...]:
        """The input features' results, without the prediction distribution."""
        return tuple(f for f in self.features if f.name != PREDICTION)

    @property
    def prediction(self) -> FeatureDrift | None:
        """The prediction distribution's result, when predictions were compared."""
        return next((f for f in self.features if f.name == PREDICTION), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601)."""
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "detected": self.detected,
            "share_drifted": self.share_drifted,
            "window_rows": self.window_rows,
            "reference_rows": self.reference_rows,
            "alpha": self.alpha,
            "min_rows": self.min_rows,
            "psi_min": self.psi_min,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "method": f.method,
                    "statistic": f.statistic,
                    "p_value": f.p_value,
                    "corrected_p_value": f.corrected_p_value,
                    "drifted": f.drifted,
                    "reference_rows": f.reference_rows,
                    "current_rows": f.current_rows,
                    "chi2": f.chi2,
                    "note": f.note,
                }
                for f in self.features
            ],
        }


def detect_drift(check: DriftCheck, config: DriftConfig) -> DriftReport:
    """Test every reference feature (and the predictions) in the window; pure and thread-safe."""
    reference = check.reference
    rows = len(check.inputs)
    report = DriftReport(
        model=check.model,
        version=check.version,
        status="insufficient data",
        window_rows=rows,
        reference_rows=reference.rows,
        alpha=config.alpha,
        min_rows=config.min_rows,
        since=check.since,
        until=check.until,
        psi_min=config.psi_min,
    )
    if rows < config.min_rows:
        return report
    raw = [
        _test_feature(reference, check.inputs, name, kind) for name, kind in reference.kinds.items()
    ]
    if reference.predictions is not None and check.predictions is not None:
        raw.append(_test_predictions(reference, check.predictions))
    tested = [f for f in raw if f.p_value is not None]
    corrected = dict(
        zip((f.name for f in tested), holm([f.p_value or 0.0 for f in tested]), strict=True)
    )
    features = tuple(_judge(f, corrected.get(f.name), config) for f in raw)
    inputs = [f for f in features if f.name != PREDICTION and f.is_tested]
    share = sum(f.drifted for f in inputs) / len(inputs) if inputs else 0.0
    detected = any(f.drifted for f in features)
    return replace(
        report,
        status="drift" if detected else "no drift",
        features=features,
        share_drifted=share,
        detected=detected,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given), each in [0, 1].

    Reject where adjusted < alpha: that controls the family-wise error rate at alpha under any
    dependence between the tests, and is never less powerful than plain Bonferroni.
    """
    count = len(p_values)
    adjusted = [0.0] * count
    running = 0.0
    for rank, index in enumerate(sorted(range(count), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def category_values(series: pd.Series) -> pd.Series:
    """Values as category strings, missing ones as MISSING (how counts and bars see them)."""
    return series.map(lambda v: MISSING if _is_missing(v) else str(v)).astype(object)


def numeric_values(series: pd.Series) -> np.ndarray:
    """The finite numbers of a column (others are dropped), as float64."""
    numbers = pd.to_numeric(pd.Series(series), errors="coerce")
    values: np.ndarray = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    finite: np.ndarray = values[np.isfinite(values)]
    return finite


def _test_feature(
    reference: Reference, window: pd.DataFrame, name: str, kind: Kind
) -> FeatureDrift:
    if name not in window.columns:
        return _skipped(name, kind, "not in the prediction log (redacted?)")
    if kind == "numeric":
        return _ks(name, kind, reference.frame[name], window[name])
    return _chi2_psi(name, kind, reference.counts.get(name, {}), window[name])


def _test_predictions(reference: Reference, predictions: pd.Series) -> FeatureDrift:
    assert reference.predictions is not None
    if reference.prediction_kind == "numeric":
        return _ks(PREDICTION, "numeric", reference.predictions, predictions)
    counts = category_values(reference.predictions).value_counts()
    return _chi2_psi(
        PREDICTION, "categorical", {str(k): int(v) for k, v in counts.items()}, predictions
    )


def _ks(name: str, kind: str, reference: pd.Series, current: pd.Series) -> FeatureDrift:
    ref, cur = numeric_values(reference), numeric_values(current)
    if not len(ref) or not len(cur):
        side = "reference" if not len(ref) else "window"
        return _skipped(name, kind, f"no finite values in the {side}", len(ref), len(cur))
    result = ks_2samp(ref, cur)
    return FeatureDrift(
        name=name,
        kind=kind,
        method="ks",
        statistic=float(result.statistic),
        p_value=_probability(result.pvalue),
        corrected_p_value=None,
        drifted=False,
        reference_rows=len(ref),
        current_rows=len(cur),
    )


def _chi2_psi(
    name: str, kind: str, reference: Mapping[str, int], current: pd.Series
) -> FeatureDrift:
    known = set(reference)
    cur_counts: dict[str, int] = {}
    for value, count in category_values(current).value_counts().items():
        key = str(value) if str(value) in known or value == MISSING else UNSEEN
        cur_counts[key] = cur_counts.get(key, 0) + int(count)
    labels = sorted(known | set(cur_counts))
    table = np.array(
        [[reference.get(c, 0) for c in labels], [cur_counts.get(c, 0) for c in labels]],
        dtype=np.float64,
    )
    n_ref, n_cur = int(table[0].sum()), int(table[1].sum())
    if not n_ref or not n_cur:
        side = "reference" if not n_ref else "window"
        return _skipped(name, kind, f"no values in the {side}", n_ref, n_cur)
    bins = pool_rare_bins(table)
    psi = population_stability_index(bins[0], bins[1])
    if bins.shape[1] < 2:  # one bin left: both samples look the same at this resolution
        chi2, p_value = 0.0, 1.0
    else:
        chi2_result = chi2_contingency(bins)
        chi2, p_value = float(chi2_result.statistic), _probability(chi2_result.pvalue)
    return FeatureDrift(
        name=name,
        kind=kind,
        method="chi2+psi",
        statistic=psi,
        p_value=p_value,
        corrected_p_value=None,
        drifted=False,
        reference_rows=n_ref,
        current_rows=n_cur,
        chi2=chi2,
    )


def pool_rare_bins(table: np.ndarray) -> np.ndarray:
    """Merge the rarest columns of a 2xK count table until every expected count is >= 5.

    The expected count of a cell is row total x column total / grand total, smallest in the
    smaller sample's row; columns below the line go into one pooled bin, and while that bin
    is still too small it takes the next rarest column. May return a single column.
    """
    totals = table.sum(axis=0)
    line = MIN_EXPECTED * table.sum() / table.sum(axis=1).min()
    order = sorted(range(table.shape[1]), key=lambda j: totals[j])
    pooled = [j for j in order if totals[j] < line]
    kept = [j for j in order if totals[j] >= line]
    while pooled and totals[pooled].sum() < line and kept:
        pooled.append(kept.pop(0))
    columns = [table[:, j] for j in kept]
    if pooled:
        columns.append(table[:, pooled].sum(axis=1))
    return np.column_stack(columns)


def population_stability_index(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI = sum((cur% - ref%) * ln(cur% / ref%)) over bins, with counts smoothed by 0.5.

    Conventionally < 0.1 is no shift, 0.1-0.2 a moderate one and >= 0.2 a significant one.
    """
    ref = (reference + PSI_SMOOTHING) / (reference.sum() + PSI_SMOOTHING * len(reference))
    cur = (current + PSI_SMOOTHING) / (current.sum() + PSI_SMOOTHING * len(current))
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _judge(feature: FeatureDrift, corrected: float | None, config: DriftConfig) -> FeatureDrift:
    if corrected is None:
        return feature
    significant = corrected < config.alpha
    if feature.method == "chi2+psi":
        drifted = significant and (feature.statistic or 0.0) >= config.psi_min
    else:
        drifted = significant
    return replace(feature, corrected_p_value=corrected, drifted=drifted)


def _skipped(name: str, kind: str, note: str, ref_rows: int = 0, cur_rows: int = 0) -> FeatureDrift:
    return FeatureDrift(
        name=name,
        kind=kind,
        method="skipped",
        statistic=None,
        p_value=None,
        corrected_p_value=None,
        drifted=False,
        reference_rows=ref_rows,
        current_rows=cur_rows,
        note=note,
    )


def _profile_counts(stats: Mapping[str, Any], sample: pd.Series) -> dict[str, int]:
    """Counts over every training row when the profile has them, else over the sample."""
    frequencies = stats.get("frequencies")
    if frequencies is None:
        counts = category_values(sample).value_counts()
        return {str(k): int(v) for k, v in counts.items()}
    result = {str(k): int(v) for k, v in frequencies.items()}
    # Profiles keep the 1000 most frequent categories; the rest of the rows are unseen ones.
    tail = int(stats.get("count", 0)) - sum(result.values())
    if tail > 0:
        result[UNSEEN] = tail
    if stats.get("nulls"):
        result[MISSING] = int(stats["nulls"])
    return result


def _probability(value: Any) -> float:
    number = float(value)
    return 1.0 if math.isnan(number) else min(1.0, max(0.0, number))


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
