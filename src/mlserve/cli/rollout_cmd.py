"""`mlserve rollout` and `mlserve compare`: put a candidate version beside production, watch it,
promote or roll it back; compare two versions on a labelled holdout file.

The registry keeps rollouts and checks their settings; running servers pick changes up within
one reload interval. Holdout metrics are the ones `mlserve train` records (`training/evaluate.py`),
computed on what each version answers when the file is read and checked as `mlserve predict`
reads and checks it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from mlserve.cli.context import CliContext, actor, console, context
from mlserve.errors import Conflict, InvalidInput, RolloutNotFound
from mlserve.types import DEFAULT_ALIAS, ModelRef

if TYPE_CHECKING:
    import numpy as np

    from mlserve.registry import ModelVersion, Rollout, RolloutLimits

MISSING = "–"
"""Shown for a value the server does not have (yet)."""

rollout_app = typer.Typer(
    help="Roll a candidate version out beside production: canary share, sticky A/B, shadow "
    "traffic, limits that roll it back, promotion.\n\n"
    "Example: [bold]mlserve rollout start churn --candidate 3 --canary 10 "
    "--max-error-rate 0.02[/bold]",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Model name.")]
CanaryOpt = Annotated[
    float | None, typer.Option(help="Percent (0-100) of requests the candidate answers.")
]
ShadowOpt = Annotated[
    float | None,
    typer.Option(help="Percent (0-100) of production's requests also sent to the candidate."),
]
StickyOpt = Annotated[
    str | None,
    typer.Option(help="Request header (e.g. X-User-Id) whose value always picks the same version."),
]
ErrorRateOpt = Annotated[
    float | None,
    typer.Option(help="Roll back when this fraction (0-1) of the candidate's requests fail."),
]
P99RatioOpt = Annotated[
    float | None,
    typer.Option(
        help="Roll back when the candidate's p99 latency exceeds production's this many times."
    ),
]
WindowOpt = Annotated[float | None, typer.Option(help="Seconds of traffic the limits judge.")]
MinRequestsOpt = Annotated[
    int | None, typer.Option(help="Fewest candidate requests in the window before judging.")
]


@rollout_app.command("start")
def rollout_start(
    ctx: typer.Context,
    name: NameArg,
    candidate: Annotated[int, typer.Option(help="Version to roll out.")],
    canary: CanaryOpt = None,
    shadow: ShadowOpt = None,
    sticky_header: StickyOpt = None,
    max_error_rate: ErrorRateOpt = None,
    max_p99_ratio: P99RatioOpt = None,
    window: WindowOpt = None,
    min_requests: MinRequestsOpt = None,
) -> None:
    """Start a rollout of version CANDIDATE of NAME beside the version production points at.

    Example: [bold]mlserve rollout start churn --candidate 3 --canary 10 --shadow 100
    --max-error-rate 0.02 --max-p99-ratio 2[/bold]
    """
    from mlserve.registry import RolloutLimits

    limits = _limits(RolloutLimits(), max_error_rate, max_p99_ratio, window, min_requests)
    rollout = (
        context(ctx)
        .store()
        .start_rollout(
            name,
            candidate,
            canary=canary or 0.0,
            shadow=shadow or 0.0,
            sticky_header=sticky_header,
            limits=limits,
            actor=actor(),
        )
    )
    console.print(
        f"Started rollout {rollout.id} of {name}: candidate {rollout.candidate} beside "
        f"{DEFAULT_ALIAS} {rollout.production}, {_shares(rollout)}.",
        highlight=False,
    )


@rollout_app.command("set")
def rollout_set(
    ctx: typer.Context,
    name: NameArg,
    canary: CanaryOpt = None,
    shadow: ShadowOpt = None,
    sticky_header: StickyOpt = None,
    no_sticky: Annotated[
        bool, typer.Option("--no-sticky", help="Stop routing by a header.")
    ] = False,
    max_error_rate: ErrorRateOpt = None,
    max_p99_ratio: P99RatioOpt = None,
    window: WindowOpt = None,
    min_requests: MinRequestsOpt = None,
) -> None:
    """Change the active rollout of NAME; what is not given stays as it is.

    Example: [bold]mlserve rollout set churn --canary 50[/bold]
    """
    if no_sticky and sticky_header is not None:
        raise InvalidInput("give --sticky-header or --no-sticky, not both")
    store = context(ctx).store()
    limits = None
    if any(v is not None for v in (max_error_rate, max_p99_ratio, window, min_requests)):
        current = store.rollout(name)
        if current is None:
            raise RolloutNotFound(name)
        limits = _limits(current.limits, max_error_rate, max_p99_ratio, window, min_requests)
    rollout = store.update_rollout(
        name,
        canary=canary,
        shadow=shadow,
        sticky_header=sticky_header,
        clear_sticky=no_sticky,
        limits=limits,
        actor=actor(),
    )
    console.print(f"Rollout {rollout.id} of {name}: {_shares(rollout)}.", highlight=False)


@rollout_app.command("promote")
def rollout_promote(
    ctx: typer.Context,
    name: NameArg,
    require_better: Annotated[
        str | None,
        typer.Option(
            metavar="METRIC",
            help="Promote only if the candidate beats production on METRIC over --data "
            "(accuracy, precision, recall, f1, roc_auc; rmse, mae, r2).",
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Labelled holdout file for --require-better (CSV, Parquet or JSON)."),
    ] = None,
) -> None:
    """Point production at the candidate of NAME's active rollout, and end the rollout.

    Example: [bold]mlserve rollout promote churn --require-better f1 --data holdout.csv[/bold]
    """
    if (require_better is None) != (data is None):
        raise InvalidInput("--require-better and --data go together")
    cli = context(ctx)
    store = cli.store()
    rollout = store.rollout(name)
    if rollout is None:
        raise RolloutNotFound(name)
    if require_better is not None and data is not None:
        production = store.resolve(ModelRef(name, alias=DEFAULT_ALIAS))
        candidate = store.get_version(name, rollout.candidate)
        scores = {v.version: holdout_metrics(cli, v, data) for v in (production, candidate)}
        metric = require_better
        _check_metric(metric, production, scores[production.version])
        ours, theirs = scores[candidate.version][metric], scores[production.version][metric]
        if not is_better(metric, ours, theirs):
            raise Conflict(
                f"not promoted: candidate {candidate.version} has {metric} {ours:.4f}, "
                f"{DEFAULT_ALIAS} {production.version} has {theirs:.4f} on {data}"
            )
    promoted = store.promote_rollout(name, actor=actor())
    console.print(
        f"{name}@{DEFAULT_ALIAS} → {promoted.candidate}; rollout {promoted.id} promoted.",
        highlight=False,
    )


@rollout_app.command("rollback")
def rollout_rollback(
    ctx: typer.Context,
    name: NameArg,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "rolled back by hand",
) -> None:
    """End NAME's active rollout; all traffic returns to production.

    Example: [bold]mlserve rollout rollback churn --reason "p99 too high"[/bold]
    """
    rollout = context(ctx).store().rollback_rollout(name, reason, actor=actor())
    console.print(
        f"Rollout {rollout.id} of {name} rolled back; {DEFAULT_ALIAS} {rollout.production} "
        "answers everything.",
        highlight=False,
    )


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    name: NameArg,
    server: Annotated[
        str | None,
        typer.Option(help="Server URL to read /metrics from (default: http://HOST:PORT)."),
    ] = None,
) -> None:
    """Show NAME's rollout (versions, shares, limits, state) and, when the server answers, each
    version's requests, errors, p95/p99 latency and online accuracy (or MAE) from feedback.

    Example: [bold]mlserve rollout status churn[/bold]
    """
    cli = context(ctx)
    settings = cli.settings()
    store = cli.store()
    rollout = store.rollout(name)
    if rollout is None:
        ended = store.rollouts(name)
        last = (
            f" (last: rollout {ended[0].id}, {ended[0].state.replace('_', ' ')}: {ended[0].reason})"
            if ended
            else ""
        )
        console.print(f"{name}: no active rollout{last}", highlight=False)
        return
    console.print(
        f"[bold]{name}[/bold]: rollout {rollout.id} {rollout.state}, started "
        f"{rollout.started_at:%Y-%m-%d %H:%M:%S} by {rollout.actor or '?'}",
        highlight=False,
    )
    console.print(f"routing: {_shares(rollout)}", highlight=False)
    console.print(f"limits: {_limits_text(rollout.limits)}", highlight=False)
    url = server or f"http://{settings.host}:{settings.port}"
    live = _live_versions(url, settings.api_keys, name)
    table = Table(title=f"{name}: versions")
    for column in ("role", "version", "traffic", "requests", "errors", "p95", "p99", "online"):
        left = column in ("role", "traffic", "online")
        table.add_column(column, justify="left" if left else "right")
    roles = (
        (DEFAULT_ALIAS, rollout.production, f"{100 - rollout.canary:g}%"),
        ("candidate", rollout.candidate, _candidate_traffic(rollout)),
    )
    for role, version, traffic in roles:
        table.add_row(role, str(version), traffic, *_live_cells((live or {}).get(str(version))))
    console.print(table)
    if live is None:
        console.print(f"server: not reachable at {url}", highlight=False)
        return
    console.print(f"server: {url}; requests, errors and latency since it started", highlight=False)
    if rollout.shadow > 0:
        console.print(
            _shadow_text(url, settings.api_keys, name, str(rollout.candidate)), highlight=False
        )


def _shadow_text(url: str, keys: tuple[str, ...], name: str, version: str) -> str:
    """One line on the shadow's record: mirrored requests by result, and how its answers
    compare with the ones sent (agreement for classifiers, mean |difference| for regressors)."""
    import httpx

    from mlserve.cli.live_metrics import Scrape

    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        with httpx.Client(base_url=url, timeout=2.0, headers=headers) as client:
            response = client.get("/metrics")
            response.raise_for_status()
            scrape = Scrape.parse(response.text, time.monotonic())
    except (httpx.HTTPError, ValueError):
        return "shadow: server metrics not available"

    def total(metric: str, label: str, value: str) -> float:
        return sum(
            s.value
            for s in scrape.samples
            if s.name == metric
            and s.labels.get("model") == name
            and s.labels.get("version") == version
            and s.labels.get(label) == value
        )

    results = {
        r: total("mlserve_shadow_requests_total", "result", r)
        for r in ("compared", "failed", "dropped")
    }
    text = ", ".join(f"{v:.0f} {r}" for r, v in results.items())
    agree = total("mlserve_shadow_rows_total", "agreement", "agree")
    disagree = total("mlserve_shadow_rows_total", "agreement", "disagree")
    values = total("mlserve_shadow_rows_total", "agreement", "value")
    if agree + disagree:
        text += f"; agreement {agree / (agree + disagree):.1%} of {agree + disagree:.0f} rows"
    elif values:
        difference = sum(
            s.value
            for s in scrape.samples
            if s.name == "mlserve_shadow_abs_difference_total"
            and s.labels.get("model") == name
            and s.labels.get("version") == version
        )
        text += f"; mean |difference| {difference / values:.4g} over {values:.0f} rows"
    return f"shadow (version {version}, mirrored requests): {text}"


@rollout_app.command("history")
def rollout_history(ctx: typer.Context, name: NameArg) -> None:
    """Show who started, changed, promoted or rolled back NAME's rollouts, when, and why.

    Example: [bold]mlserve rollout history churn[/bold]
    """
    events = context(ctx).store().rollout_history(name)
    if not events:
        console.print(f"{name}: no rollouts yet", highlight=False)
        return
    table = Table(title=f"{name}: rollout history")
    for column in ("when", "rollout", "action", "detail", "who"):
        table.add_column(column)
    for event in events:
        table.add_row(
            f"{event.at:%Y-%m-%d %H:%M:%S}",
            str(event.rollout_id),
            event.action,
            event.detail,
            event.actor or "?",
        )
    console.print(table)


def compare(
    ctx: typer.Context,
    name: NameArg,
    first: Annotated[str, typer.Argument(metavar="A", help="Version number or alias.")],
    second: Annotated[str, typer.Argument(metavar="B", help="Version number or alias.")],
    data: Annotated[
        Path,
        typer.Option(help="Labelled holdout rows with the target column (CSV, Parquet or JSON)."),
    ],
) -> None:
    """Print the metrics of two versions of NAME on a labelled holdout file, side by side.

    The metrics are those `mlserve train` records; the target column is the one the versions'
    signature names.

    Example: [bold]mlserve compare churn production 3 --data holdout.csv[/bold]
    """
    cli = context(ctx)
    store = cli.store()
    versions = [store.resolve(_reference(name, text)) for text in (first, second)]
    scores = [holdout_metrics(cli, version, data) for version in versions]
    table = Table(title=f"{name} on {data}")
    table.add_column("metric")
    for version in versions:
        aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
        table.add_column(f"v{version.version}{aliases}", justify="right")
    table.add_column("better", justify="right")
    for metric in scores[0]:
        a, b = scores[0][metric], scores[1].get(metric)
        if b is None:
            continue
        winner = "="
        if is_better(metric, a, b):
            winner = f"v{versions[0].version}"
        elif is_better(metric, b, a):
            winner = f"v{versions[1].version}"
        table.add_row(metric, f"{a:.4f}", f"{b:.4f}", winner)
    console.print(table)


# -- holdout metrics ----------------------------------------------------------------------------


def holdout_metrics(cli: CliContext, version: ModelVersion, data: Path) -> dict[str, float]:
    """The metrics `mlserve train` records, of what ``version`` answers for ``data``'s rows.

    Raises InvalidInput when the version names no target, the file lacks it, or the version
    refuses a row (the two versions must be judged on the same rows).
    """
    # Imported here: pandas, pyarrow and scikit-learn take a second to import.
    import numpy as np
    import pandas as pd

    from mlserve.batch.inline import score_file
    from mlserve.batch.scoring import PREDICTION, PROBA_PREFIX, ROW, ScoringOptions
    from mlserve.inputs import InputPolicy, build_checker
    from mlserve.runtimes import load_runtime
    from mlserve.training import read_dataset
    from mlserve.training.evaluate import evaluate
    from mlserve.types import read_manifest

    target, task = version.signature.target, version.signature.task
    if not target or task is None:
        raise InvalidInput(
            f"{version.name}:{version.version} does not record its target column and task, "
            "so a holdout file cannot be scored"
        )
    labels = read_dataset(data)
    if target not in labels.columns:
        raise InvalidInput(f"{data}: target column {target!r} not found")
    settings = cli.settings()
    store = cli.store()
    folder = store.local_folder(version)
    runtime = load_runtime(folder, expected_sha256=version.sha256, safe=settings.safe_loading)
    policy = InputPolicy.from_rules(settings.input_rules_for(version.name))
    checker = build_checker(runtime, read_manifest(folder).reference_profile, policy)
    options = ScoringOptions(
        f"{version.name}:{version.version}",
        passthrough=(target,),  # the label is an expected extra column, not a wrong schema
        proba=runtime.has_proba,
        policy=policy,
    )
    scored = score_file(data, runtime, checker, options)
    if scored.rejects:
        first, more = scored.rejects[0], len(scored.rejects) - 1
        suffix = f" ({more} more row{'s' if more > 1 else ''} refused)" if more else ""
        raise InvalidInput(
            f"{data}: version {version.version} refuses row {first.row}: {first.reason}{suffix}"
        )
    if scored.table is None:
        raise InvalidInput(f"{data}: no rows to score")
    rows = scored.table.column(ROW).to_numpy()
    truth = labels[target].iloc[rows].reset_index(drop=True)
    if truth.isna().any():
        raise InvalidInput(f"{data}: target column {target!r} has missing values")
    predictions = scored.table.column(PREDICTION).to_numpy(zero_copy_only=False)
    probabilities = None
    if runtime.has_proba:
        columns = [f"{PROBA_PREFIX}{label}" for label in runtime.classes]
        probabilities = np.column_stack(
            [scored.table.column(c).to_numpy(zero_copy_only=False) for c in columns]
        )
    answers = _answers(np.asarray(runtime.classes, dtype=object), predictions, probabilities)
    return evaluate(answers, pd.DataFrame(index=truth.index), truth, task)


@dataclass(frozen=True, slots=True)
class _Answered:
    """A version's answers for the holdout rows, shaped like the estimator `evaluate` takes."""

    classes_: np.ndarray
    predictions: np.ndarray

    def predict(self, _rows: object) -> np.ndarray:
        """The answers, already computed."""
        return self.predictions


@dataclass(frozen=True, slots=True)
class _AnsweredWithProba(_Answered):
    """Answers with class probabilities (`evaluate` adds ROC-AUC for them)."""

    probabilities: np.ndarray

    def predict_proba(self, _rows: object) -> np.ndarray:
        """The probabilities, already computed."""
        return self.probabilities


def _answers(
    classes: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray | None
) -> _Answered:
    if probabilities is None:
        return _Answered(classes, predictions)
    return _AnsweredWithProba(classes, predictions, probabilities)


def is_better(metric: str, ours: float, theirs: float) -> bool:
    """True when ``ours`` beats ``theirs`` on ``metric`` (higher for scores, lower for errors)."""
    from mlserve.training.evaluate import HIGHER_IS_BETTER

    return ours > theirs if metric in HIGHER_IS_BETTER else ours < theirs


def _check_metric(metric: str, version: ModelVersion, scores: dict[str, float]) -> None:
    if metric not in scores:
        known = ", ".join(scores) or "none"
        raise InvalidInput(
            f"unknown metric {metric!r} for a {version.signature.task} model; known: {known}"
        )


# -- formatting and small helpers ---------------------------------------------------------------


def _reference(name: str, text: str) -> ModelRef:
    """``3`` is a version of NAME, anything else an alias."""
    return ModelRef.parse(f"{name}:{text}" if text.isdigit() else f"{name}@{text}")


def _limits(
    base: RolloutLimits,
    max_error_rate: float | None,
    max_p99_ratio: float | None,
    window_s: float | None,
    min_requests: int | None,
) -> RolloutLimits:
    """``base`` with the limits given on the command line."""
    given: dict[str, Any] = {
        "max_error_rate": max_error_rate,
        "max_p99_ratio": max_p99_ratio,
        "window_s": window_s,
        "min_requests": min_requests,
    }
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def _shares(rollout: Rollout) -> str:
    sticky = (
        f"sticky header {rollout.sticky_header}" if rollout.sticky_header else "no sticky header"
    )
    return f"canary {rollout.canary:g}%, shadow {rollout.shadow:g}%, {sticky}"


def _candidate_traffic(rollout: Rollout) -> str:
    shadow = f" + shadow {rollout.shadow:g}%" if rollout.shadow else ""
    return f"{rollout.canary:g}%{shadow}"


def _limits_text(limits: RolloutLimits) -> str:
    found = []
    if limits.max_error_rate is not None:
        found.append(f"error rate ≤ {limits.max_error_rate:.1%}")
    if limits.max_p99_ratio is not None:
        found.append(f"p99 ≤ {limits.max_p99_ratio:g}x {DEFAULT_ALIAS}'s")
    if not found:
        return "none (never rolled back automatically)"
    return (
        f"{', '.join(found)}, over {limits.window_s:g} s once the candidate has "
        f"{limits.min_requests} requests"
    )


@dataclass(frozen=True, slots=True)
class _Live:
    requests: float
    errors: float
    p95_s: float | None
    p99_s: float | None
    online: str = MISSING
    """Online accuracy (classifiers) or MAE (regressors) from feedback labels, when any came."""


def _live_versions(url: str, keys: tuple[str, ...], name: str) -> dict[str, _Live] | None:
    """Per version of ``name``, what the server's /metrics says; None when it cannot be read."""
    import httpx

    from mlserve.cli.live_metrics import Scrape, histogram_quantile, version_statuses

    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    try:
        with httpx.Client(base_url=url, timeout=2.0, headers=headers) as client:
            response = client.get("/metrics")
            response.raise_for_status()
            scrape = Scrape.parse(response.text, time.monotonic())
    except (httpx.HTTPError, ValueError):
        return None
    buckets: dict[str, dict[float, float]] = {}
    for (model, version), samples in scrape.by_version(
        "mlserve_request_duration_seconds_bucket"
    ).items():
        if model == name:
            summed = buckets.setdefault(version, {})
            for sample in samples:  # summed over protocols, as `mlserve status` does
                bound = float(sample.labels["le"])
                summed[bound] = summed.get(bound, 0.0) + sample.value
    return {
        entry.version: _Live(
            entry.requests,
            entry.errors,
            entry.p95_s,
            histogram_quantile(0.99, buckets.get(entry.version, {}).items()),
            _online(entry.accuracy, entry.mae, entry.labelled_rows),
        )
        for entry in version_statuses(scrape)
        if entry.model == name
    }


def _online(accuracy: float | None, mae: float | None, labelled: float | None) -> str:
    """A version's online score from feedback, as `mlserve status` shows it."""
    rows = f" ({labelled:.0f} labelled)" if labelled else ""
    if accuracy is not None:
        return f"accuracy {accuracy:.3f}{rows}"
    if mae is not None:
        return f"MAE {mae:.4g}{rows}"
    return MISSING


def _live_cells(live: _Live | None) -> list[str]:
    if live is None:
        return [MISSING] * 5
    errors = f"{live.errors:.0f}"
    if live.requests:
        errors += f" ({live.errors / live.requests:.1%})"
    return [
        f"{live.requests:.0f}",
        errors,
        MISSING if live.p95_s is None else f"{live.p95_s * 1000:.1f} ms",
        MISSING if live.p99_s is None else f"{live.p99_s * 1000:.1f} ms",
        live.online,
    ]
