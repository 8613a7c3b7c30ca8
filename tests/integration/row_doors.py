"""One row, written the way each door's own client writes it, and the verdict each door gives.

A row is a mapping of column to cell (a feature, or the extra column ``extra``); a cell is any
Python value a client might hold: a number, text, a boolean, None, a float NaN or infinity, a
list, or :data:`ABSENT` (the key is left out of a JSON record; a table writes it as an empty
cell). Each door renders rows as its real clients do:

- JSON doors (/v1, /invocations' four JSON formats, `mlserve predict` on a .json file, `mlserve
  batch` on JSON Lines) write the cells as JSON values with ``json.dumps`` (so NaN and Infinity
  tokens appear, as Python clients write them);
- CSV doors (/invocations text/csv, `mlserve predict` and `mlserve batch` on a .csv file) write
  cells as pandas' ``to_csv`` does: None and NaN as an empty field, ``True``, floats by ``repr``,
  ints by ``str``, text as it is (quoted where RFC 4180 asks: see :func:`csv_document`);
- OIP doors send one 1-D tensor per column: FP64 for floats and missing values, INT64 for
  integers that fit, BOOL for booleans, BYTES of the CSV text otherwise (always BYTES for a
  categorical feature, as the model's metadata asks); for an all-numeric model, also one 2-D FP64
  tensor ``input-0``.

A door that cannot write a row at all (a list in a CSV cell or a tensor) is skipped for it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
from serving_harness import binary_request, decode_binary_response
from typer.testing import CliRunner

from mlserve.cli.main import app, exit_code_for
from mlserve.errors import MlserveError

EXTRA = "extra"
"""The column no model has: ignored under the default ``extra_columns: ignore``."""
ID = "id"
"""The id column of batch inputs."""


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()
"""A key left out of a JSON record (a table writes an empty cell)."""

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Model:
    """A served model as the doors need it: name, features in signature order, classes."""

    name: str
    features: tuple[str, ...]
    categorical: frozenset[str]
    classes: tuple[str, ...]
    all_numeric: bool


@dataclass(frozen=True, slots=True)
class Accepted:
    """The row was scored: its class and class probabilities (in the model's class order)."""

    label: str
    proba: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The row was refused; ``reason`` is the text after ``row N: ``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Anything else (a 500, a request-level 400, an unexpected exit): never expected."""

    what: str


Verdict = Accepted | Rejected | Failed


@dataclass(frozen=True, slots=True)
class Answer:
    """What a door said about a whole request of rows: a verdict per row when it scored them
    (or, for batch, always), else the first rejected row and how many more were rejected."""

    per_row: tuple[Verdict, ...] | None = None
    first_rejected: tuple[int, str, int] | None = None
    """(row, reason, more rows rejected) when a door refuses the whole request."""
    failure: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)
    """Warnings the command raised (a real process prints them on standard error)."""


# -- cells -----------------------------------------------------------------------------------------


def is_missing(cell: Any) -> bool:
    """None, ABSENT or a float NaN."""
    return cell is None or cell is ABSENT or (isinstance(cell, float) and math.isnan(cell))


def csv_text(cell: Any) -> str:
    """A cell as pandas' ``to_csv`` writes it."""
    if is_missing(cell):
        return ""
    if isinstance(cell, float):
        return repr(cell)
    return str(cell)


def json_cell(cell: Any) -> Any:
    """A cell as a JSON value (ABSENT, where it cannot be left out, is null)."""
    return None if cell is ABSENT else cell


def has_nested(rows: Sequence[Row]) -> bool:
    """True when some cell is a list or an object (only JSON can carry it)."""
    return any(isinstance(v, list | dict) for row in rows for v in row.values())


def columns_of(model: Model, rows: Sequence[Row]) -> list[str]:
    """The columns a table of ``rows`` has: the features, then ``extra`` if any row has it."""
    return [*model.features, *([EXTRA] if any(EXTRA in r for r in rows) else [])]


def cell(row: Row, column: str) -> Any:
    """The row's cell for ``column`` (ABSENT when the row has none)."""
    return row.get(column, ABSENT)


def record(row: Row) -> dict[str, Any]:
    """The row as a JSON record: ABSENT keys left out."""
    return {k: v for k, v in row.items() if v is not ABSENT}


def dumps(document: Any) -> bytes:
    """JSON as Python's json module writes it (NaN and Infinity tokens included)."""
    return json.dumps(document, allow_nan=True).encode()


def csv_document(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV document (header first) of cells rendered by :func:`csv_text`, quoted as RFC 4180
    asks: a field holding a comma, a quote, a line feed or a carriage return.

    Not by the csv module alone: before CPython 3.11.9 (gh-67044) its writer left a bare
    carriage return unquoted when the line terminator is "\\n", so the document split the
    row in two for every CSV reader (pandas' included). The document is read back here, so a
    row that does not survive its own rendering is caught in the harness, not blamed on a door.
    """
    table = [list(columns), *([csv_text(v) for v in values] for values in rows)]
    document = "".join(",".join(_quoted(field) for field in fields) + "\n" for fields in table)
    read_back = list(csv.reader(io.StringIO(document, newline="")))
    assert read_back == table, (table, document)
    return document


def _quoted(field: str) -> str:
    if any(ch in field for ch in ',"\r\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


def table_csv(model: Model, rows: Sequence[Row], *, ids: bool = False) -> str:
    """``rows`` as a CSV table: (``id``,) features, (``extra``)."""
    columns = columns_of(model, rows)
    cells = [[cell(r, c) for c in columns] for r in rows]
    if ids:
        return csv_document([ID, *columns], [[i, *c] for i, c in enumerate(cells)])
    return csv_document(columns, cells)


# -- OIP tensors -----------------------------------------------------------------------------------

_INT64 = (-(2**63), 2**63)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def tensor_type(column: str, cells: Sequence[Any], model: Model) -> str:
    """The datatype a client gives a column's tensor."""
    if column in model.categorical:
        return "BYTES"
    if all(is_missing(c) or isinstance(c, float) for c in cells):
        return "FP64"
    if all(_is_int(c) and _INT64[0] <= c < _INT64[1] for c in cells):
        return "INT64"
    if all(isinstance(c, bool) for c in cells):
        return "BOOL"
    return "BYTES"


def tensors(model: Model, rows: Sequence[Row]) -> list[tuple[str, list[Any], str]]:
    """One (name, cells, datatype) per column of ``rows``."""
    out = []
    for column in columns_of(model, rows):
        cells = [cell(r, column) for r in rows]
        out.append((column, cells, tensor_type(column, cells, model)))
    return out


def json_tensor(name: str, cells: Sequence[Any], datatype: str) -> dict[str, Any]:
    """A JSON input tensor of shape [rows]."""
    if datatype == "BYTES":
        data: list[Any] = [csv_text(c) for c in cells]
    elif datatype == "FP64":
        data = [None if is_missing(c) and not isinstance(c, float) else c for c in cells]
    else:
        data = list(cells)
    return {"name": name, "shape": [len(cells)], "datatype": datatype, "data": data}


def binary_array(cells: Sequence[Any], datatype: str) -> np.ndarray:
    """A column as the numpy array a binary tensor is written from."""
    if datatype == "BYTES":
        return np.asarray([csv_text(c) for c in cells], dtype=object)
    if datatype == "FP64":
        return np.asarray([math.nan if is_missing(c) else c for c in cells], dtype="<f8")
    if datatype == "INT64":
        return np.asarray(cells, dtype="<i8")
    return np.asarray(cells, dtype=np.bool_)


def matrix_cells(model: Model, rows: Sequence[Row]) -> list[list[float | None]] | None:
    """The rows as a 2-D FP64 tensor's data, or None when some cell is no float (an int would
    turn into a float there, so a reason quoting it would quote another value)."""
    if not model.all_numeric:
        return None
    data: list[list[float | None]] = []
    for row in rows:
        values: list[float | None] = []
        for feature in model.features:
            value = cell(row, feature)
            if is_missing(value) and not isinstance(value, float):
                values.append(None)
            elif isinstance(value, float):
                values.append(value)
            else:
                return None
        data.append(values)
    return data


# -- HTTP doors ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request to the server."""

    path: str
    body: bytes
    headers: dict[str, str]
    reader: Callable[[httpx.Response, Model], tuple[Verdict, ...]]


def _v2_reader(response: httpx.Response, model: Model) -> tuple[Verdict, ...]:
    outputs = decode_binary_response(response)
    labels = [str(v) for v in outputs["predict"].tolist()]
    probas = outputs["predict_proba"].astype(np.float64).tolist()
    return tuple(Accepted(lab, tuple(p)) for lab, p in zip(labels, probas, strict=True))


def _v1_reader(response: httpx.Response, model: Model) -> tuple[Verdict, ...]:
    body = response.json()
    assert body["classes"] == list(model.classes), body
    return tuple(
        Accepted(str(lab), tuple(float(x) for x in p))
        for lab, p in zip(body["predictions"], body["probabilities"], strict=True)
    )


def _mlflow_reader(response: httpx.Response, model: Model) -> tuple[Verdict, ...]:
    # /invocations gives labels only: probabilities are compared through the other doors.
    return tuple(Accepted(str(lab), ()) for lab in response.json()["predictions"])


_JSON = {"content-type": "application/json"}
_PROBA_OUTPUTS = [{"name": "predict"}, {"name": "predict_proba"}]


def oip_json(model: Model, rows: Sequence[Row]) -> HttpRequest | None:
    """OIP JSON: one 1-D tensor per column."""
    if has_nested(rows):
        return None
    inputs = [json_tensor(n, c, t) for n, c, t in tensors(model, rows)]
    body = dumps({"inputs": inputs, "outputs": _PROBA_OUTPUTS})
    return HttpRequest(f"/v2/models/{model.name}/infer", body, _JSON, _v2_reader)


def oip_binary(model: Model, rows: Sequence[Row]) -> HttpRequest | None:
    """OIP with Triton's binary tensor extension: one 1-D tensor per column, as raw bytes."""
    if has_nested(rows):
        return None
    inputs = [(n, binary_array(c, t), t) for n, c, t in tensors(model, rows)]
    body, headers = binary_request(inputs, outputs=_PROBA_OUTPUTS)
    return HttpRequest(f"/v2/models/{model.name}/infer", body, headers, _v2_reader)


def oip_matrix(model: Model, rows: Sequence[Row]) -> HttpRequest | None:
    """OIP JSON: the rows as one 2-D FP64 tensor (all-numeric models; the extra column has no
    place in it)."""
    data = matrix_cells(model, rows)
    if data is None:
        return None
    # Flat, row-major, as tritonclient writes it (nested data, with or without nulls, reads the
    # same: test_a_null_in_nested_tensor_data_is_a_missing_value).
    flat = [value for values in data for value in values]
    tensor = {"name": "input-0", "shape": [len(rows), len(model.features)], "datatype": "FP64"}
    body = dumps({"inputs": [{**tensor, "data": flat}], "outputs": _PROBA_OUTPUTS})
    return HttpRequest(f"/v2/models/{model.name}/infer", body, _JSON, _v2_reader)


def oip_matrix_binary(model: Model, rows: Sequence[Row]) -> HttpRequest | None:
    """OIP binary: the rows as one 2-D FP64 tensor of raw float64 (NaN where missing)."""
    data = matrix_cells(model, rows)
    if data is None:
        return None
    matrix = np.asarray([[math.nan if v is None else v for v in r] for r in data], dtype="<f8")
    body, headers = binary_request([("input-0", matrix, "FP64")], outputs=_PROBA_OUTPUTS)
    return HttpRequest(f"/v2/models/{model.name}/infer", body, headers, _v2_reader)


def v1_rows(model: Model, rows: Sequence[Row]) -> HttpRequest:
    """/v1 with rows as lists in signature order (no place for an extra column)."""
    instances = [[json_cell(cell(r, f)) for f in model.features] for r in rows]
    body = dumps({"instances": instances, "probabilities": True})
    return HttpRequest(f"/v1/models/{model.name}:predict", body, _JSON, _v1_reader)


def v1_records(model: Model, rows: Sequence[Row]) -> HttpRequest:
    """/v1 with rows as records."""
    body = dumps({"instances": [record(r) for r in rows], "probabilities": True})
    return HttpRequest(f"/v1/models/{model.name}:predict", body, _JSON, _v1_reader)


def _invocations(model: Model, body: bytes, content_type: str) -> HttpRequest:
    path = f"/invocations?model={model.name}"
    return HttpRequest(path, body, {"content-type": content_type}, _mlflow_reader)


def mlflow_split(model: Model, rows: Sequence[Row]) -> HttpRequest:
    """/invocations ``dataframe_split``."""
    columns = columns_of(model, rows)
    data = [[json_cell(cell(r, c)) for c in columns] for r in rows]
    body = dumps({"dataframe_split": {"columns": columns, "data": data}})
    return _invocations(model, body, "application/json")


def mlflow_records(model: Model, rows: Sequence[Row]) -> HttpRequest:
    """/invocations ``dataframe_records``."""
    return _invocations(
        model, dumps({"dataframe_records": [record(r) for r in rows]}), "application/json"
    )


def mlflow_instances(model: Model, rows: Sequence[Row]) -> HttpRequest:
    """/invocations ``instances`` (records)."""
    return _invocations(model, dumps({"instances": [record(r) for r in rows]}), "application/json")


def mlflow_inputs(model: Model, rows: Sequence[Row]) -> HttpRequest:
    """/invocations ``inputs`` as columns (name -> values)."""
    columns = {c: [json_cell(cell(r, c)) for r in rows] for c in columns_of(model, rows)}
    return _invocations(model, dumps({"inputs": columns}), "application/json")


def mlflow_csv(model: Model, rows: Sequence[Row]) -> HttpRequest | None:
    """/invocations text/csv."""
    if has_nested(rows):
        return None
    return _invocations(model, table_csv(model, rows).encode(), "text/csv")


HTTP_DOORS: dict[str, Callable[[Model, Sequence[Row]], HttpRequest | None]] = {
    "oip-json": oip_json,
    "oip-binary": oip_binary,
    "oip-matrix": oip_matrix,
    "oip-matrix-binary": oip_matrix_binary,
    "v1-rows": v1_rows,
    "v1-records": v1_records,
    "invocations-split": mlflow_split,
    "invocations-records": mlflow_records,
    "invocations-instances": mlflow_instances,
    "invocations-inputs": mlflow_inputs,
    "invocations-csv": mlflow_csv,
}
"""Every HTTP door: a request for rows, or None when the door cannot carry them."""


def ask_server(client: httpx.Client, model: Model, request: HttpRequest, rows: int) -> Answer:
    """Send one request; its answer per row, or the server's refusal."""
    response = client.post(request.path, content=request.body, headers=request.headers)
    if response.status_code == 200:
        verdicts = request.reader(response, model)
        if len(verdicts) != rows:
            return Answer(failure=f"{len(verdicts)} predictions for {rows} rows")
        return Answer(per_row=verdicts)
    text = response.text
    if response.status_code == 400:
        refused = parse_refusal(response.json().get("error", ""))
        if refused is not None:
            return Answer(first_rejected=refused)
    return Answer(failure=f"HTTP {response.status_code}: {text[:300]}")


def parse_refusal(message: str) -> tuple[int, str, int] | None:
    """``row N: reason`` with an optional `` (K more rows rejected)``, parsed; else None."""
    if not message.startswith("row "):
        return None
    number, _, reason = message[4:].partition(": ")
    if not number.isdigit():
        return None
    head, sep, tail = reason.rpartition(" (")
    for suffix in (" more rows rejected)", " more row rejected)"):
        if sep and tail.endswith(suffix) and tail[: -len(suffix)].isdigit():
            return int(number), head, int(tail[: -len(suffix)])
    return int(number), reason, 0


def expected_answer(verdicts: Sequence[Verdict]) -> Answer | None:
    """What a door that scores a request whole must answer, from each row's own verdict (None
    when some row's verdict is already a failure)."""
    if any(isinstance(v, Failed) for v in verdicts):
        return None
    rejected = [(i, v.reason) for i, v in enumerate(verdicts) if isinstance(v, Rejected)]
    if not rejected:
        return Answer(per_row=tuple(verdicts))
    row, reason = rejected[0]
    return Answer(first_rejected=(row, reason, len(rejected) - 1))


# -- CLI doors -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cli:
    """The real `mlserve` command, run in this process against a project's registry."""

    root: Path

    def run(self, *args: str) -> tuple[int, str, tuple[str, ...]]:
        """Run `mlserve --home HOME ARGS` in the project folder: (exit code, message, warnings).

        Warnings are recorded, not raised: a real process prints them and carries on, so they
        must not change a verdict here; the caller judges them on their own.
        """
        runner = CliRunner()
        with contextlib.chdir(self.root), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = runner.invoke(app, ["--home", str(self.root / ".mlserve"), *args])
        shown = tuple(f"{w.category.__name__}: {w.message}" for w in caught)
        error = result.exception
        if isinstance(error, MlserveError):  # mlserve.cli.main.run turns these into exit codes
            return exit_code_for(error), str(error), shown
        if error is not None and not isinstance(error, SystemExit):
            raise error
        return result.exit_code, result.output, shown


def predict_file(cli: Cli, model: Model, path: Path) -> Answer:
    """`mlserve predict REF FILE --proba -o OUT.csv`: every row's verdict, or the first
    rejected row's."""
    output = path.with_suffix(".out.csv")
    code, message, shown = cli.run(
        "predict", f"{model.name}@production", str(path), "--proba", "-o", str(output)
    )
    if code == 4:
        prefix = f"{path}: "
        refused = (
            parse_refusal(message.removeprefix(prefix)) if message.startswith(prefix) else None
        )
        if refused is not None:
            return Answer(first_rejected=refused, warnings=shown)
    if code != 0:
        return Answer(failure=f"exit {code}: {message[:300]}", warnings=shown)
    with output.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    return Answer(per_row=tuple(_accepted(line, model) for line in lines), warnings=shown)


def batch_file(cli: Cli, model: Model, path: Path, rows: int) -> Answer:
    """`mlserve batch REF FILE OUT.parquet --id-column id --proba --workers 1`: every row's
    verdict, from OUT (scored rows, by id) and its rejects file."""
    output = path.with_name(f"{path.name}.out.parquet")
    rejects = path.with_name(f"{path.name}.rejects.jsonl")
    code, message, shown = cli.run(
        "batch",
        f"{model.name}@production",
        str(path),
        str(output),
        "--rejects",
        str(rejects),
        "--id-column",
        ID,
        "--proba",
        "--workers",
        "1",
        "--no-progress",
    )
    if code not in (0, 10):
        return Answer(failure=f"exit {code}: {message[:300]}", warnings=shown)
    verdicts: dict[int, Verdict] = {}
    if output.exists():
        for line in pq.read_table(output).to_pylist():
            verdicts[int(line[ID])] = _accepted(line, model)
    if rejects.exists():
        for text in rejects.read_text(encoding="utf-8").splitlines():
            reject = json.loads(text)
            if reject["id"] is None:  # the reader could not split the line into cells
                what = f"line {reject['line']} unreadable: {reject['reason']}"
                return Answer(failure=what, warnings=shown)
            verdicts[int(reject["id"])] = Rejected(reject["reason"])
    if (code == 10) != any(isinstance(v, Rejected) for v in verdicts.values()):
        return Answer(failure=f"exit {code} does not match the rejects file", warnings=shown)
    if sorted(verdicts) != list(range(rows)):
        return Answer(failure=f"rows {sorted(verdicts)} answered for {rows} rows", warnings=shown)
    return Answer(per_row=tuple(verdicts[i] for i in range(rows)), warnings=shown)


def _accepted(line: Mapping[str, Any], model: Model) -> Accepted:
    return Accepted(
        str(line["prediction"]), tuple(float(line[f"proba_{c}"]) for c in model.classes)
    )


def write_csv(model: Model, rows: Sequence[Row], path: Path, *, ids: bool) -> Path | None:
    """``rows`` as a CSV file (None when a cell is a list or an object)."""
    if has_nested(rows):
        return None
    path.write_text(table_csv(model, rows, ids=ids), encoding="utf-8")
    return path


def write_json(rows: Sequence[Row], path: Path) -> Path:
    """``rows`` as a JSON list of records."""
    path.write_bytes(dumps([record(r) for r in rows]))
    return path


def write_json_lines(rows: Sequence[Row], path: Path) -> Path:
    """``rows`` as JSON Lines, each record with its ``id``."""
    lines = [dumps({ID: i, **record(r)}) for i, r in enumerate(rows)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


class ServerWarnings:
    """The warnings a server logged (its ``py.warnings`` records), read as they come."""

    def __init__(self, stderr_path: Path) -> None:
        self._path = stderr_path
        self._offset = 0

    def new(self) -> list[str]:
        """Warnings logged since the last call (the log is written before each response)."""
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        whole = data[: data.rfind(b"\n") + 1]
        self._offset += len(whole)
        return [
            json.loads(line)["message"]
            for line in whole.splitlines()
            if b'"logger":"py.warnings"' in line
        ]
