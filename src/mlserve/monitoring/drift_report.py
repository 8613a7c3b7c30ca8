"""The drift report as one self-contained HTML file: a summary, then a plot per feature.

Plots are drawn with matplotlib's object API (a ``Figure`` per plot, no pyplot): no display,
no global figure state, and the SVG is inlined, so the file needs no network and no JavaScript.
Numeric features get overlaid histograms and ECDFs (with the KS distance marked); categorical
ones side-by-side bars of category shares. Drifted features come first and are flagged in red.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.typing import RcKeyType

from mlserve.monitoring.drift import (
    PREDICTION,
    DriftCheck,
    DriftReport,
    FeatureDrift,
    category_values,
    numeric_values,
)

REFERENCE_COLOR = "#7b93a8"
CURRENT_COLOR = "#e8743b"
DRIFT_COLOR = "#c62828"
MAX_BARS = 12
"""Most categories drawn; the rest are summed into one ``(other)`` bar."""
HIST_BINS = 30
_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: smaller files, selectable labels
    "svg.hashsalt": "mlserve-drift",  # stable element ids, so equal input gives an equal file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": "#3d4852",
    "xtick.color": "#606f7b",
    "ytick.color": "#606f7b",
    "legend.frameon": False,
}


@dataclass(frozen=True, slots=True)
class _Panel:
    """One feature's card: its name, kind, test result (None when untested) and plot."""

    name: str
    kind: str
    result: FeatureDrift | None
    svg: str


def render_html(report: DriftReport, check: DriftCheck) -> str:
    """The report as an HTML document; ``check`` supplies the data behind the plots.

    Not thread-safe (matplotlib's rc settings are process-wide): call it from one thread.
    """
    results = {f.name: f for f in report.features}
    panels = [_panel(name, kind, results.get(name), check) for name, kind in _plotted(check)]
    prediction = [p for p in panels if p.name == PREDICTION]
    inputs = sorted(
        (p for p in panels if p.name != PREDICTION),
        key=lambda p: (not _drifted(p), _sort_p(p.result), p.name),
    )
    ordered = prediction + inputs
    return _PAGE.format(
        title=html.escape(f"Drift report · {report.model}:{report.version}"),
        style=_STYLE,
        model=html.escape(f"{report.model}:{report.version}"),
        subtitle=_subtitle(report),
        banner=_banner(report),
        summary=_summary_table(ordered, report.alpha),
        cards="\n".join(_card(i, p) for i, p in enumerate(ordered)),
        alpha=f"{report.alpha:g}",
        psi_min=f"{report.psi_min:g}",
    )


# -- plots -----------------------------------------------------------------------------------------


def _plotted(check: DriftCheck) -> list[tuple[str, str]]:
    features: list[tuple[str, str]] = list(check.reference.kinds.items())
    if check.reference.predictions is not None and check.predictions is not None:
        features.insert(0, (PREDICTION, check.reference.prediction_kind))
    return features


def _panel(name: str, kind: str, result: FeatureDrift | None, check: DriftCheck) -> _Panel:
    reference = check.reference
    if name == PREDICTION:
        assert reference.predictions is not None
        assert check.predictions is not None
        ref_values, cur_values = reference.predictions, check.predictions
        ref_counts = _counts(ref_values)
    else:
        ref_values = reference.frame[name]
        cur_values = check.inputs[name] if name in check.inputs.columns else pd.Series(dtype=object)
        ref_counts = reference.counts.get(name, {})
    drifted = bool(result and result.drifted)
    if kind == "numeric":
        svg = _numeric_svg(numeric_values(ref_values), numeric_values(cur_values), result, drifted)
    else:
        svg = _categorical_svg(ref_counts, _counts(cur_values), drifted)
    return _Panel(name, kind, result, svg)


def _numeric_svg(
    ref: np.ndarray, cur: np.ndarray, result: FeatureDrift | None, drifted: bool
) -> str:
    """Overlaid density histograms (left) and ECDFs with the largest gap marked (right)."""
    with mpl.rc_context(_RC):
        # Fixed margins: constrained layout would double the drawing time of every plot.
        figure = Figure(figsize=(7.4, 2.5))
        figure.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.96, wspace=0.18)
        hist, ecdf = figure.subplots(1, 2)
        both = np.concatenate([ref, cur])
        if not len(both):
            return _empty_svg(figure, "no values to plot")
        # Bins over the central 99 % of both samples: one outlier should not squash the rest.
        low, high = np.quantile(both, [0.005, 0.995])
        if not high > low:
            low, high = float(both.min()) - 0.5, float(both.max()) + 0.5
        edges = np.linspace(low, high, HIST_BINS + 1)
        current_color = DRIFT_COLOR if drifted else CURRENT_COLOR
        for values, color, label, alpha in (
            (ref, REFERENCE_COLOR, "reference", 0.45),
            (cur, current_color, "current", 0.35),
        ):
            if len(values):
                clipped = np.clip(values, low, high)
                # One filled outline per sample, not one rectangle per bin: smaller, faster.
                hist.hist(
                    clipped, edges, density=True, histtype="stepfilled", color=color, alpha=alpha
                )
                hist.hist(clipped, edges, density=True, histtype="step", color=color, lw=1.2)
                hist.plot([], [], color=color, lw=6, alpha=0.6, label=label)
                xs = np.sort(values)
                ecdf.step(
                    xs, np.arange(1, len(xs) + 1) / len(xs), where="post", color=color, lw=1.6
                )
        hist.set_ylabel("density")
        hist.set_yticks([])
        hist.legend(loc="upper right")
        ecdf.set_ylabel("cumulative share")
        ecdf.set_ylim(0, 1.02)
        if len(ref) and len(cur):
            _mark_ks_gap(ecdf, ref, cur, result)
        return _svg(figure)


def _mark_ks_gap(axes: Axes, ref: np.ndarray, cur: np.ndarray, result: FeatureDrift | None) -> None:
    """Draw the KS statistic: the vertical gap where the two ECDFs are furthest apart."""
    grid = np.sort(np.concatenate([ref, cur]))
    ref_cdf = np.searchsorted(np.sort(ref), grid, side="right") / len(ref)
    cur_cdf = np.searchsorted(np.sort(cur), grid, side="right") / len(cur)
    at = int(np.argmax(np.abs(ref_cdf - cur_cdf)))
    x, y0, y1 = grid[at], ref_cdf[at], cur_cdf[at]
    axes.vlines(x, min(y0, y1), max(y0, y1), colors="#222", lw=1.4, linestyles="dotted")
    label = f"D = {result.statistic:.3f}" if result and result.statistic is not None else ""
    axes.annotate(
        label,
        (x, (y0 + y1) / 2),
        xytext=(6, 0),
        textcoords="offset points",
        va="center",
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
    )


def _categorical_svg(ref: Mapping[str, int], cur: Mapping[str, int], drifted: bool) -> str:
    """Horizontal bars of each category's share, reference beside current."""
    ref_total, cur_total = sum(ref.values()) or 1, sum(cur.values()) or 1
    labels = sorted(
        set(ref) | set(cur),
        key=lambda c: -max(ref.get(c, 0) / ref_total, cur.get(c, 0) / cur_total),
    )
    if len(labels) > MAX_BARS:  # keep the biggest, sum the tail
        shown, tail = labels[: MAX_BARS - 1], labels[MAX_BARS - 1 :]
        ref = {**{c: ref.get(c, 0) for c in shown}, "(other)": sum(ref.get(c, 0) for c in tail)}
        cur = {**{c: cur.get(c, 0) for c in shown}, "(other)": sum(cur.get(c, 0) for c in tail)}
        labels = [*shown, "(other)"]
    with mpl.rc_context(_RC):
        height_in = 0.7 + 0.3 * max(len(labels), 2)
        figure = Figure(figsize=(7.4, height_in))
        figure.subplots_adjust(left=0.2, right=0.98, bottom=0.45 / height_in, top=0.98)
        axes = figure.subplots()
        if not labels:
            return _empty_svg(figure, "no values to plot")
        positions = np.arange(len(labels))
        ref_share = np.array([ref.get(c, 0) / ref_total for c in labels])
        cur_share = np.array([cur.get(c, 0) / cur_total for c in labels])
        height = 0.4
        axes.barh(
            positions - height / 2, ref_share, height, color=REFERENCE_COLOR, label="reference"
        )
        axes.barh(
            positions + height / 2,
            cur_share,
            height,
            color=DRIFT_COLOR if drifted else CURRENT_COLOR,
            label="current",
        )
        axes.set_yticks(positions, [_shorten(c) for c in labels])
        axes.invert_yaxis()  # biggest category on top
        axes.xaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
        axes.set_xlim(0, max(1e-9, float(max(ref_share.max(), cur_share.max()))) * 1.15)
        axes.legend(loc="lower right")
        return _svg(figure)


def _empty_svg(figure: Figure, message: str) -> str:
    for axes in figure.axes:
        axes.set_axis_off()
    figure.text(0.5, 0.5, message, ha="center", va="center", color="#606f7b")
    return _svg(figure)


def _svg(figure: Figure) -> str:
    """The figure as an inline <svg> element (no XML prolog, no DOCTYPE with its DTD URL)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    start = text.find("<svg")
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text[start:], flags=re.DOTALL)


def _counts(values: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in category_values(values).value_counts().items()}


def _shorten(label: str, width: int = 28) -> str:
    return label if len(label) <= width else f"{label[: width - 1]}…"


# -- page ------------------------------------------------------------------------------------------


def _drifted(panel: _Panel) -> bool:
    return bool(panel.result and panel.result.drifted)


def _sort_p(result: FeatureDrift | None) -> float:
    if result is None or result.corrected_p_value is None:
        return 2.0
    return result.corrected_p_value


def _subtitle(report: DriftReport) -> str:
    window = ""
    if report.since is not None and report.until is not None:
        window = f"{report.since:%Y-%m-%d %H:%M} → {report.until:%Y-%m-%d %H:%M} UTC · "
    return html.escape(
        f"{window}{report.window_rows:,} logged rows against {report.reference_rows:,} "
        f"reference rows · alpha {report.alpha:g}, Holm-corrected"
    )


def _banner(report: DriftReport) -> str:
    if report.status == "insufficient data":
        return (
            '<div class="banner muted"><strong>Insufficient data.</strong> '
            f"{report.window_rows:,} rows in the window; at least {report.min_rows:,} are needed "
            "before drift is judged. The plots show what there is.</div>"
        )
    inputs = [f for f in report.inputs if f.is_tested]
    drifted = [f for f in inputs if f.drifted]
    prediction = report.prediction
    if not report.detected:
        return (
            '<div class="banner ok"><strong>No drift.</strong> '
            f"None of the {len(inputs)} tested features"
            f"{' or the predictions' if prediction else ''} differs from the reference.</div>"
        )
    parts = []
    if drifted:
        names = ", ".join(html.escape(f.name) for f in drifted[:6]) + (
            " …" if len(drifted) > 6 else ""
        )
        parts.append(f"{len(drifted)} of {len(inputs)} features ({names})")
    if prediction is not None and prediction.drifted:
        parts.append("the prediction distribution")
    return (
        f'<div class="banner drift"><strong>Drift detected</strong> in {" and ".join(parts)}.'
        f' <span class="share">{report.share_drifted:.0%} of features drifted</span></div>'
    )


def _summary_table(panels: list[_Panel], alpha: float) -> str:
    rows = []
    for index, panel in enumerate(panels):
        result = panel.result
        css = "drifted" if _drifted(panel) else ""
        if result is None or not result.is_tested:
            note = html.escape(result.note if result else "not tested")
            cells = f'<td colspan="4" class="muted">{note}</td><td></td>'
        else:
            cells = (
                f"<td>{_method(result)}</td><td class=num>{_number(result.statistic)}</td>"
                f"<td class=num>{_p(result.p_value)}</td>"
                f"<td class=num>{_p(result.corrected_p_value)}</td>"
                f"<td>{_evidence_bar(result, alpha)}</td>"
            )
        verdict = (
            '<span class="badge red">drifted</span>'
            if _drifted(panel)
            else ('<span class="badge green">stable</span>' if result and result.is_tested else "")
        )
        rows.append(
            f'<tr class="{css}"><td><a href="#f{index}">{_display(panel.name)}</a></td>'
            f"<td>{html.escape(panel.kind)}</td>{cells}<td>{verdict}</td></tr>"
        )
    return (
        "<table><thead><tr><th>feature</th><th>kind</th><th>test</th><th>statistic</th>"
        "<th>p-value</th><th>corrected p</th><th>evidence</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _evidence_bar(result: FeatureDrift, alpha: float) -> str:
    """-log10(corrected p) as a bar whose middle tick is alpha: past the tick means drifted."""
    p = max(result.corrected_p_value or 1.0, 1e-300)
    width = min(100.0, 50.0 * -math.log10(p) / -math.log10(alpha))
    css = "red" if result.drifted else "grey"
    return (
        f'<div class="bar"><div class="fill {css}" style="width:{width:.0f}%"></div>'
        '<div class="tick"></div></div>'
    )


def _card(index: int, panel: _Panel) -> str:
    result = panel.result
    badge = '<span class="badge red">drifted</span>' if _drifted(panel) else ""
    if result is not None and result.is_tested:
        meta = (
            f"{_method(result)} · statistic {_number(result.statistic)} · "
            f"p {_p(result.p_value)} → corrected {_p(result.corrected_p_value)} · "
            f"{result.reference_rows:,} reference / {result.current_rows:,} current values"
        )
        if result.chi2 is not None:
            meta += f" · χ² {result.chi2:.1f}"
    else:
        meta = html.escape(result.note if result else "not tested")
    css = "card drifted" if _drifted(panel) else "card"
    return (
        f'<article class="{css}" id="f{index}"><h2>{_display(panel.name)} {badge}'
        f'<span class="kind">{html.escape(panel.kind)}</span></h2>'
        f'<p class="meta">{meta}</p>{panel.svg}</article>'
    )


def _display(name: str) -> str:
    return "predictions" if name == PREDICTION else html.escape(name)


def _method(result: FeatureDrift) -> str:
    return "Kolmogorov-Smirnov" if result.method == "ks" else "chi-square + PSI"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1e}" if 0 < value < 1e-3 else f"{value:.3f}"


_STYLE = """
:root { --red: #c62828; --green: #2e7d32; --ink: #1f2933; --muted: #6b7785; --line: #e4e7eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: #f5f7fa; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 24px 48px; }
h1 { margin: 0 0 4px; font-size: 24px; }
.sub { margin: 0 0 16px; color: var(--muted); }
.banner { padding: 12px 16px; border-radius: 8px; margin-bottom: 22px; font-size: 15px; }
.banner.ok { background: #e8f5e9; border-left: 5px solid var(--green); }
.banner.drift { background: #ffebee; border-left: 5px solid var(--red); }
.banner.muted { background: #eceff1; border-left: 5px solid #90a4ae; }
.share { float: right; color: var(--red); font-weight: 600; }
table { width: 100%; border-collapse: collapse; background: #fff; border-radius: 8px;
        overflow: hidden; box-shadow: 0 1px 2px rgba(0,0,0,.06); margin-bottom: 28px; }
th, td { padding: 7px 12px; text-align: left; border-bottom: 1px solid var(--line); }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
     background: #fafbfc; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
td.muted { color: var(--muted); }
tr.drifted td { background: #fff5f5; }
tr.drifted td:first-child { box-shadow: inset 4px 0 var(--red); }
a { color: inherit; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; vertical-align: middle; }
.badge.red { background: var(--red); color: #fff; }
.badge.green { background: #e8f5e9; color: var(--green); }
.bar { position: relative; width: 120px; height: 10px; background: #eef1f4; border-radius: 5px; }
.bar .fill { height: 100%; border-radius: 5px; }
.fill.red { background: var(--red); } .fill.grey { background: #9aa5b1; }
.bar .tick { position: absolute; left: 50%; top: -3px; width: 2px; height: 16px;
             background: var(--ink); opacity: .5; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 18px; }
.card { background: #fff; border-radius: 8px; padding: 14px 16px 8px;
        box-shadow: 0 1px 2px rgba(0,0,0,.06); border-top: 4px solid #cfd8dc; }
.card.drifted { border-top-color: var(--red); }
.card h2 { margin: 0; font-size: 16px; }
.card .kind { float: right; font-size: 12px; font-weight: 400; color: var(--muted); }
.card .meta { margin: 2px 0 6px; color: var(--muted); font-size: 12px; }
.card svg { width: 100%; height: auto; }
footer { margin-top: 30px; color: var(--muted); font-size: 12px; }
.legend-ref { color: #7b93a8; font-weight: 700; } .legend-cur { color: #e8743b; font-weight: 700; }
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
<h1>Drift report · {model}</h1>
<p class="sub">{subtitle}</p>
{banner}
{summary}
<p class="sub"><span class="legend-ref">■ reference</span> (training data) against
<span class="legend-cur">■ current</span> (logged window); drifted features in red.</p>
<section class="cards">
{cards}
</section>
<footer>
Numeric features: two-sample Kolmogorov-Smirnov test; the statistic D is the largest gap
between the two cumulative curves (dotted line). Categorical features: chi-square test on
category counts (rare categories pooled) with PSI as the statistic; a categorical feature
drifts only when it is significant and its PSI is at least {psi_min}. p-values are corrected
with Holm-Bonferroni over every test in the report; drifted means corrected p &lt; {alpha}.
The evidence bar grows with -log10(corrected p); its middle tick is alpha.
</footer>
</main>
</body>
</html>
"""
