"""OUTPUT's id and passthrough columns keep the input's types, whatever the input format."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from batch_data import input_frame

from mlserve.batch import JobSpec, PinnedModel, run


def score(source: Path, output: Path, model: PinnedModel, **options: object) -> None:
    """A one-worker job in chunks of 60 rows, keyed by ``id``, passing ``segment`` through."""
    spec = JobSpec(
        str(source), output, chunk_rows=60, workers=1, id_column="id", passthrough=("segment",)
    )
    run(replace(spec, **options), model)


def output_table(output: Path) -> pa.Table:
    """OUTPUT as pyarrow reads it: Parquet with its types, CSV with pyarrow's own inference."""
    return pq.read_table(output) if output.suffix == ".parquet" else pacsv.read_csv(output)


def id_text(path: Path) -> list[str]:
    """The ``id`` column of a CSV file as written."""
    options = pacsv.ConvertOptions(column_types={"id": pa.string()}, include_columns=["id"])
    return list(pacsv.read_csv(path, convert_options=options).column("id").to_pylist())


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_csv_int_ids_stay_int64_and_join_back_to_every_input_row(
    tmp_path: Path, churn_model: PinnedModel, suffix: str
) -> None:
    source, output = tmp_path / "in.csv", tmp_path / f"out{suffix}"
    frame = input_frame(500)
    frame.to_csv(source, index=False)
    score(source, output, churn_model)
    table = output_table(output)
    assert table.schema.field("id").type == pa.int64()
    assert table.column("id").to_pylist() == frame["id"].tolist()
    assert table.schema.field("segment").type == pa.string()
    joined = pd.read_csv(source).merge(table.to_pandas(), on="id", validate="one_to_one")
    assert len(joined) == len(frame)
    if suffix == ".csv":
        assert id_text(output) == id_text(source)


@pytest.mark.parametrize("write", ["to_parquet", "to_json"])
def test_parquet_and_json_lines_int_ids_stay_int64(
    tmp_path: Path, churn_model: PinnedModel, write: str
) -> None:
    source = tmp_path / ("in.parquet" if write == "to_parquet" else "in.jsonl")
    frame = input_frame(200)
    if write == "to_parquet":
        frame.to_parquet(source)
    else:
        frame.to_json(source, orient="records", lines=True)
    score(source, tmp_path / "out.parquet", churn_model)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("id").type == pa.int64()
    assert table.column("id").to_pylist() == frame["id"].tolist()


def test_ids_with_leading_zeros_stay_text(tmp_path: Path, churn_model: PinnedModel) -> None:
    source = tmp_path / "in.csv"
    frame = input_frame(200).astype({"id": str})
    frame["id"] = [f"{i:07d}" for i in range(200)]  # "0000000" … "0000199"
    frame.to_csv(source, index=False)
    score(source, tmp_path / "out.parquet", churn_model)
    score(source, tmp_path / "out.csv", churn_model)
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("id").type == pa.string()
    assert table.column("id").to_pylist() == frame["id"].tolist()
    assert id_text(tmp_path / "out.csv") == id_text(source)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_ids_that_are_ints_in_one_chunk_and_text_in_a_later_one_are_text_in_every_row(
    tmp_path: Path, churn_model: PinnedModel, suffix: str
) -> None:
    source, output = tmp_path / "in.csv", tmp_path / f"out{suffix}"
    frame = input_frame(200).astype({"id": str})
    frame.loc[150:, "id"] = [f"A-{i}" for i in range(150, 200)]  # chunks 0-1 ints, 2-3 text
    frame.to_csv(source, index=False)
    score(source, output, churn_model)
    if suffix == ".parquet":
        table = pq.read_table(output)
        assert table.schema.field("id").type == pa.string()
        assert table.column("id").to_pylist() == frame["id"].tolist()
    else:
        assert id_text(output) == id_text(source) == frame["id"].tolist()


def test_a_carried_feature_is_checked_from_its_text_as_before(
    tmp_path: Path, churn_model: PinnedModel
) -> None:
    source = tmp_path / "in.csv"
    frame = input_frame(120).astype({"f0": object})
    frame.loc[3, "f0"] = "9007199254740993"  # an int64 that float64 cannot hold exactly
    frame.loc[4, "f0"] = "abc"
    frame.to_csv(source, index=False)
    score(source, tmp_path / "out.parquet", churn_model, passthrough=("segment", "f0"))
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("f0").type == pa.string()
    assert table.column("id").to_pylist() == [i for i in frame["id"] if i != 1004]
    assert table.column("f0").to_pylist()[3] == "9007199254740993"
    rejects = (tmp_path / "out.rejects.jsonl").read_text()
    assert "feature 'f0' is not a number: 'abc'" in rejects
    assert '"id":1004' in rejects.replace(" ", "")
