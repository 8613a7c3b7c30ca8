"""Durations for drift windows: 90s, 30m, 1h, 2d, 1h30m."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.errors import InvalidInput
from mlserve.monitoring.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("2d", 172_800.0),
        ("1w", 604_800.0),
        ("1h30m", 5400.0),
        (" 1.5H ", 5400.0),
        ("45", 45.0),
    ],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "h", "1x", "1h 30m", "-1h", "0", "0s", "nan", "inf", "11000d"]
)
def test_malformed_or_empty_durations_are_refused_naming_the_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid duration"):
        parse_duration(text)


@given(st.integers(1, 10 * 365 * 86_400))
def test_formatting_and_parsing_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_formatting_reads_like_the_flags() -> None:
    assert [format_duration(s) for s in (45, 3600, 5400, 86_400)] == ["45s", "1h", "1h30m", "1d"]
