"""The HTML drift report: one self-contained file, a plot per feature, drift flagged."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd
import pytest
from drift_data import customers, reference_of, window_check

from mlserve.monitoring.drift import DriftCheck, DriftConfig, Reference, detect_drift
from mlserve.monitoring.drift_report import render_html

CONFIG = DriftConfig(alpha=0.05, min_rows=100)


class Page(HTMLParser):
    """Every tag with its attributes, and the ids of the feature cards."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def named(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]


@pytest.fixture(scope="module")
def reference() -> Reference:
    return reference_of(customers(3000, seed=0))


@pytest.fixture(scope="module")
def drifted_page(reference: Reference) -> str:
    """The report of a window whose monthly and plan moved."""
    window = customers(400, seed=1, monthly_shift=8.0, plan_mix=(0.2, 0.3, 0.5))
    check = window_check(reference, window)
    return render_html(detect_drift(check, CONFIG), check)


def test_the_report_is_self_contained(drifted_page: str) -> None:
    page = Page(drifted_page)
    for _tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key, "").strip().lower()
            assert not value.startswith(("http:", "https:", "//")), (key, value)
    assert not page.named("script")
    assert not page.named("link")
    assert not page.named("img")  # plots are inline SVG, not files
    assert "url(http" not in drifted_page
    assert "<!DOCTYPE svg" not in drifted_page  # its DTD URL would be fetched by some tools


def test_every_feature_and_the_predictions_get_a_plot(drifted_page: str) -> None:
    page = Page(drifted_page)
    cards = page.named("article")
    assert len(cards) == 6  # five features and the predictions
    assert len(page.named("svg")) == 6
    summary_links = [a["href"] for a in page.named("a")]
    assert sorted(summary_links) == sorted(f"#{card['id']}" for card in cards)


def test_drifted_features_are_flagged_and_come_first(drifted_page: str) -> None:
    cards = Page(drifted_page).named("article")
    flags = ["drifted" in card["class"] for card in cards]
    assert flags[1:3] == [True, True]  # after the predictions: monthly and plan
    assert not any(flags[3:])
    assert "Drift detected" in drifted_page
    assert drifted_page.index(">monthly ") < drifted_page.index(">tenure ")


def test_a_steady_window_says_no_drift(reference: Reference) -> None:
    check = window_check(reference, customers(400, seed=2))
    page = render_html(detect_drift(check, CONFIG), check)
    assert "No drift." in page
    assert not [c for c in Page(page).named("article") if "drifted" in c["class"]]


def test_too_few_rows_still_renders_the_plots(reference: Reference) -> None:
    check = window_check(reference, customers(20, seed=3))
    page = render_html(detect_drift(check, CONFIG), check)
    assert "Insufficient data." in page
    assert len(Page(page).named("svg")) == 6


def test_feature_names_and_categories_are_escaped() -> None:
    training = pd.DataFrame({"<b>plan</b>": ["<i>basic</i>", "pro"] * 100, "x": range(200)})
    from mlserve.monitoring import build_reference_profile

    reference = Reference.from_profile(build_reference_profile(training))
    window = training.sample(150, random_state=1, replace=True).reset_index(drop=True)
    check = DriftCheck("m", "1", reference, window)
    page = render_html(detect_drift(check, CONFIG), check)
    assert "<b>plan</b>" not in page
    assert "&lt;b&gt;plan&lt;/b&gt;" in page
    assert "<i>basic" not in page
