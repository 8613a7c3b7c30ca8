"""parse_feedback: both body forms, and a 400-worthy message naming the field for each mistake."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlserve.errors import InvalidInput
from mlserve.monitoring.feedback import FeedbackItem
from mlserve.serving.feedback import parse_feedback


def body(payload: Any) -> bytes:
    """JSON bytes."""
    return json.dumps(payload).encode()


def test_the_list_form_with_optional_rows() -> None:
    items = parse_feedback(
        body(
            {
                "feedback": [
                    {"request_id": "a", "label": "setosa"},
                    {"request_id": "b", "label": 3.5, "row": 2},
                ]
            }
        )
    )
    assert items == [FeedbackItem("a", "setosa", 0), FeedbackItem("b", 3.5, 2)]


def test_the_compact_form_with_and_without_rows() -> None:
    assert parse_feedback(body({"request_ids": ["a", "b"], "labels": ["x", 1]})) == [
        FeedbackItem("a", "x", 0),
        FeedbackItem("b", 1, 0),
    ]
    assert parse_feedback(body({"request_ids": ["a"], "labels": [True], "rows": [4]})) == [
        FeedbackItem("a", True, 4)
    ]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "JSON object"),
        ({"labels": ["x"]}, '"feedback"'),
        ({"feedback": []}, "feedback: must be a non-empty list"),
        ({"feedback": ["a"]}, r"feedback\[0\]: must be an object"),
        ({"feedback": [{"request_id": "a"}]}, r"feedback\[0\].label: is missing"),
        ({"feedback": [{"label": "x"}]}, r"feedback\[0\].request_id: must be a non-empty"),
        ({"feedback": [{"request_id": "", "label": "x"}]}, r"feedback\[0\].request_id"),
        ({"feedback": [{"request_id": "a" * 129, "label": "x"}]}, "longer than 128"),
        ({"feedback": [{"request_id": "a", "label": None}]}, r"feedback\[0\].label: must be"),
        ({"feedback": [{"request_id": "a", "label": [1]}]}, r"feedback\[0\].label"),
        ({"feedback": [{"request_id": "a", "label": 1, "row": -1}]}, r"feedback\[0\].row"),
        ({"feedback": [{"request_id": "a", "label": 1, "row": True}]}, r"feedback\[0\].row"),
        ({"request_ids": "a", "labels": ["x"]}, "request_ids: must be a non-empty list"),
        ({"request_ids": ["a", "b"], "labels": ["x"]}, "labels: must be a list with one"),
        ({"request_ids": ["a"], "labels": ["x"], "rows": [0, 1]}, "rows: must be a list"),
        ({"request_ids": [7], "labels": ["x"]}, r"request_ids\[0\]: must be a non-empty"),
        ({"request_ids": ["a", "b"], "labels": ["x", {}]}, r"labels\[1\]: must be"),
    ],
)
def test_mistakes_name_the_field(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_feedback(body(payload))


def test_unparsable_json_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_feedback(b"{not json")
