"""Finding the rows a model refuses by halving (``refusals.py``), with a real float32 forest that
refuses 1e39 (past float32) although a float64 matrix holds it."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from mlserve.inputs import as_float64, predict_around_refusals
from mlserve.runtimes import Batch

TOO_BIG = 1e39


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    """A forest on two features, fitted on 24 rows."""
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(24, 2))
    return RandomForestClassifier(n_estimators=3, random_state=0).fit(matrix, matrix[:, 0] > 0)


def counting(forest: RandomForestClassifier, calls: list[int]) -> Callable[[Batch], np.ndarray]:
    """The forest's predict, noting the size of each call in ``calls``."""

    def predict(rows: Batch) -> np.ndarray:
        calls.append(len(rows))
        with np.errstate(over="ignore"):  # the cast to float32 overflows before the refusal
            return np.asarray(forest.predict(rows))

    return predict


def rows_with_refused(count: int, refused: list[int]) -> np.ndarray:
    """``count`` ordinary rows, with TOO_BIG in the rows at ``refused``."""
    matrix = np.tile([0.5, -0.5], (count, 1))
    matrix[refused, 0] = TOO_BIG
    return matrix


def test_rows_the_model_takes_cost_one_call(forest: RandomForestClassifier) -> None:
    calls: list[int] = []
    batch = rows_with_refused(16, [])
    results, refused = predict_around_refusals(counting(forest, calls), batch)
    assert refused == {}
    assert calls == [16]
    assert np.array_equal(np.concatenate(results), forest.predict(batch))


def test_refused_rows_are_named_and_the_others_predicted_in_order(
    forest: RandomForestClassifier,
) -> None:
    calls: list[int] = []
    batch = rows_with_refused(64, [5, 40])
    results, refused = predict_around_refusals(counting(forest, calls), batch)
    assert sorted(refused) == [5, 40]
    assert all(r.startswith("the model refused it: ValueError: ") for r in refused.values())
    kept = np.delete(np.arange(64), [5, 40])
    assert np.array_equal(np.concatenate(results), forest.predict(batch[kept]))
    assert len(calls) <= 1 + 2 * 2 * math.log2(64)  # grows with the refused rows, not the rows


def test_a_span_known_to_fail_is_split_before_any_call(forest: RandomForestClassifier) -> None:
    calls: list[int] = []
    batch = rows_with_refused(8, [0])
    _, refused = predict_around_refusals(counting(forest, calls), batch, known_to_fail=True)
    assert list(refused) == [0]
    assert 8 not in calls


def test_a_span_of_a_frame_numbers_rows_in_the_whole_frame(
    forest: RandomForestClassifier,
) -> None:
    frame = pd.DataFrame(rows_with_refused(10, [7]), columns=["a", "b"])
    seen: list[list[int]] = []

    def predict(rows: Batch) -> np.ndarray:
        assert isinstance(rows, pd.DataFrame)
        seen.append(list(rows.index))
        with np.errstate(over="ignore"):
            return np.asarray(forest.predict(rows.to_numpy()))

    results, refused = predict_around_refusals(predict, frame, span=(4, 10))
    assert list(refused) == [7]
    assert sum(len(r) for r in results) == 5
    assert min(min(rows) for rows in seen) == 4


def test_an_error_that_is_no_refusal_propagates(forest: RandomForestClassifier) -> None:
    def broken(rows: Batch) -> np.ndarray:
        raise RuntimeError("the model's process died")

    with pytest.raises(RuntimeError):
        predict_around_refusals(broken, rows_with_refused(4, []))


def test_a_json_number_as_float64() -> None:
    """null is NaN, an integer past float64 is infinite as its text reads, text is refused."""
    assert math.isnan(as_float64(None))
    assert as_float64(10**400) == math.inf
    assert as_float64(-(10**400)) == -math.inf
    assert as_float64(2) == 2.0
    with pytest.raises(ValueError, match="could not convert"):
        as_float64("abc")
