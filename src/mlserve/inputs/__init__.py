"""Input checking: one module turns incoming rows into a model's input, with one verdict per row,
for every door (serving protocols, ``mlserve predict``, batch jobs)."""

from mlserve.inputs.checker import (
    CheckedRows,
    ExtraColumns,
    InputPolicy,
    MissingValues,
    ModelLimits,
    RowChecker,
    UnknownCategories,
    refusal_reason,
)
from mlserve.inputs.csv import check_header, read_csv_text, text_convert_options
from mlserve.inputs.probe import build_checker, probe_limits, reference_batch
from mlserve.inputs.values import NULL_TOKENS, loads_json

__all__ = [
    "NULL_TOKENS",
    "CheckedRows",
    "ExtraColumns",
    "InputPolicy",
    "MissingValues",
    "ModelLimits",
    "RowChecker",
    "UnknownCategories",
    "build_checker",
    "check_header",
    "loads_json",
    "probe_limits",
    "read_csv_text",
    "reference_batch",
    "refusal_reason",
    "text_convert_options",
]
