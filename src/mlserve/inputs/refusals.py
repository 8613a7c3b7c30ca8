"""Find the rows a model refuses among rows the input checker accepted, by halving.

The checker cannot foresee everything a model refuses (a scaler that turns 1e308 into infinity
before the estimator's own finiteness test). When a predict call fails, its rows are split in
halves until each refused row is alone, so the extra calls grow with the refused rows (about
2 * log2(rows) for one), not with the rows. Serving names a request's refused rows this way, and
batch jobs and ``mlserve predict`` score around them: one search, so every door finds the same
rows with the same reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pandas as pd

from mlserve.inputs.checker import refusal_reason
from mlserve.runtimes import Batch

Result = TypeVar("Result")


def rows_between(batch: Batch, start: int, stop: int) -> Batch:
    """Rows ``start:stop`` of ``batch`` (a frame or a matrix)."""
    return batch.iloc[start:stop] if isinstance(batch, pd.DataFrame) else batch[start:stop]


def predict_around_refusals(
    predict: Callable[[Batch], Result],
    batch: Batch,
    refusal: type[Exception] | tuple[type[Exception], ...] = ValueError,
    *,
    span: tuple[int, int] | None = None,
    known_to_fail: bool = False,
) -> tuple[list[Result], dict[int, str]]:
    """``predict`` over the rows of ``span`` (default: all of ``batch``) in as few calls as the
    refused rows allow: the results of the calls that succeeded, in row order, and each refused
    row's position in ``batch`` with its reason (``refusal_reason``).

    A call that raises ``refusal`` is split in halves; any other exception propagates.
    ``known_to_fail`` says the whole span already failed, so it is split before any call.
    """
    start, stop = span if span is not None else (0, len(batch))
    results: list[Result] = []
    refused: dict[int, str] = {}
    pending = _halves(start, stop) if known_to_fail and stop - start > 1 else [(start, stop)]
    while pending:
        first, last = pending.pop()
        if first == last:
            continue
        try:
            results.append(predict(rows_between(batch, first, last)))
        except refusal as exc:
            if last - first == 1:
                refused[first] = refusal_reason(exc)
            else:
                pending += _halves(first, last)
    return results, refused


def _halves(start: int, stop: int) -> list[tuple[int, int]]:
    """``start:stop`` in two, the first half last (popped first, so results stay in order)."""
    middle = (start + stop) // 2
    return [(middle, stop), (start, middle)]
