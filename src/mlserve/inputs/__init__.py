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
    rejection_text,
)
from mlserve.inputs.csv import check_header, read_csv_text, text_convert_options
from mlserve.inputs.probe import build_checker, probe_limits, reference_batch
from mlserve.inputs.refusals import predict_around_refusals
from mlserve.inputs.values import NULL_TOKENS, as_float64, loads_json

__all__ = [
    "NULL_TOKENS",
    "CheckedRows",
    "ExtraColumns",
    "InputPolicy",
    "MissingValues",
    "ModelLimits",
    "RowChecker",
    "UnknownCategories",
    "as_float64",
    "build_checker",
    "check_header",
    "loads_json",
    "predict_around_refusals",
    "probe_limits",
    "read_csv_text",
    "reference_batch",
    "refusal_reason",
    "rejection_text",
    "text_convert_options",
]
