"""Finding input files and cutting them into deterministic chunks, per format."""

from __future__ import annotations

import pickle
import socket
import sys
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlserve.batch.readers import ReadPlan, discover_inputs, iter_chunks
from mlserve.errors import DatasetError

COLUMNS = ("a", "b")


def chunk_rows_of(
    spec: str, chunk_rows: int, done: frozenset[int] = frozenset()
) -> list[list[int]]:
    """Global row numbers of each chunk (parsed rows and unparsable ones together)."""
    plan = ReadPlan(COLUMNS, chunk_rows, done)
    return [
        sorted([*chunk.rows.tolist(), *(bad.row for bad in chunk.bad)])
        for chunk in iter_chunks(discover_inputs(spec), plan)
    ]


def test_chunks_are_cut_at_fixed_record_counts_across_formats(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(23), "b": np.arange(23) * 2.0})
    frame.to_csv(tmp_path / "data.csv", index=False)
    frame.to_parquet(tmp_path / "data.parquet", row_group_size=7)
    frame.to_json(tmp_path / "data.jsonl", orient="records", lines=True)
    expected = [list(range(10)), list(range(10, 20)), list(range(20, 23))]
    for name in ("data.csv", "data.parquet", "data.jsonl"):
        assert chunk_rows_of(str(tmp_path / name), 10) == expected, name


def test_files_of_a_folder_are_numbered_in_sorted_order_and_chunks_never_span_files(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pd.DataFrame({"a": range(5), "b": range(5)}).to_csv(folder / "part-2.csv", index=False)
    pd.DataFrame({"a": range(3), "b": range(3)}).to_csv(folder / "part-1.csv", index=False)
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.csv").write_text("a,b\n1,2\n")
    inputs = discover_inputs(str(folder))
    assert [Path(f.path).name for f in inputs.files] == ["part-1.csv", "part-2.csv"]
    assert chunk_rows_of(str(folder), 4) == [[0, 1, 2], [3, 4, 5, 6], [7]]
    assert chunk_rows_of(str(tmp_path / "in" / "part-*.csv"), 4) == [[0, 1, 2], [3, 4, 5, 6], [7]]


def test_csv_rows_with_the_wrong_field_count_become_rejects_in_their_place(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('a,b\n1,2\n3\n4,"multi\nline"\n5,6,7\n8,9\n')
    chunks = list(iter_chunks(discover_inputs(str(path)), ReadPlan(COLUMNS, 2)))
    assert [c.rows.tolist() for c in chunks] == [[0], [2], [4]]
    assert [(b.row, b.line, b.raw) for c in chunks for b in c.bad] == [(1, 3, "3"), (3, 5, "5,6,7")]
    assert "expected 2 fields, found 1" in chunks[0].bad[0].reason
    assert chunks[1].table is not None
    assert chunks[1].table.column("b").to_pylist() == ["multi\nline"]


def test_json_lines_skip_blank_lines_but_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\nnot json\n')
    [chunk] = list(iter_chunks(discover_inputs(str(path)), ReadPlan(COLUMNS, 10)))
    assert chunk.texts == (b'{"a": 1}', b'{"a": 2}', b"not json")
    assert chunk.lines is not None
    assert chunk.lines.tolist() == [1, 3, 4]
    assert chunk.rows.tolist() == [0, 1, 2]


def test_done_parquet_chunks_are_skipped(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(30), "b": np.arange(30)})
    frame.to_parquet(tmp_path / "data.parquet", row_group_size=10)
    left = chunk_rows_of(str(tmp_path / "data.parquet"), 5, done=frozenset({0, 1, 3}))
    assert left == [list(range(10, 15)), *[list(range(s, s + 5)) for s in (20, 25)]]


def test_inputs_can_come_from_any_fsspec_filesystem() -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/batch-reader-test/data.csv", b"a,b\n1,2\n3,4\n")
    inputs = discover_inputs("memory://batch-reader-test/data.csv")
    assert inputs.files[0].url.startswith("memory://")  # rejects name files with their protocol
    assert chunk_rows_of("memory://batch-reader-test/data.csv", 10) == [[0, 1]]
    fs.rm("/batch-reader-test", recursive=True)


def test_a_file_without_a_needed_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,c\n1,2\n")
    with pytest.raises(DatasetError, match=r"missing column\(s\) b"):
        list(iter_chunks(discover_inputs(str(path)), ReadPlan(COLUMNS, 10)))


def test_nothing_to_read_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        discover_inputs(str(tmp_path / "missing.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no CSV, Parquet or JSON Lines files"):
        discover_inputs(str(tmp_path / "empty"))


def test_an_unknown_protocol_is_an_error_naming_the_input() -> None:
    with pytest.raises(DatasetError, match=r"^nosuch://bucket/x\.parquet: .*nosuch"):
        discover_inputs("nosuch://bucket/x.parquet")


def test_a_protocol_whose_package_is_missing_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # s3fs is installed for the S3 tests: hide it (an import of it fails, as when it is absent).
    monkeypatch.setitem(sys.modules, "s3fs", None)
    for protocol in ("s3", "s3a"):
        monkeypatch.delitem(sys.modules["fsspec.registry"]._registry, protocol, raising=False)
    with pytest.raises(DatasetError, match=r"^s3://bucket/x\.parquet: .*s3fs"):
        discover_inputs("s3://bucket/x.parquet")


def test_an_unreachable_server_is_an_error_naming_the_input() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/x.parquet"
        with pytest.raises(DatasetError, match=r"cannot list the input"):
            discover_inputs(url)


def test_compressed_csv_and_json_lines_are_read_through(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(7), "b": np.arange(7)})
    frame.to_csv(tmp_path / "data.csv.gz", index=False)
    frame.to_json(tmp_path / "data.jsonl.gz", orient="records", lines=True)
    assert chunk_rows_of(str(tmp_path / "data.csv.gz"), 5) == [[0, 1, 2, 3, 4], [5, 6]]
    assert chunk_rows_of(str(tmp_path / "data.jsonl.gz"), 5) == [[0, 1, 2, 3, 4], [5, 6]]
    (tmp_path / "data.json").write_text("[]")
    with pytest.raises(DatasetError, match="unsupported file type"):
        discover_inputs(str(tmp_path / "data.json"))


def test_a_chunk_sent_to_a_worker_process_arrives_whole(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(25), "b": [f"x{i}" for i in range(25)]})
    frame.to_parquet(tmp_path / "data.parquet", row_group_size=8)
    chunks = list(
        iter_chunks(discover_inputs(str(tmp_path / "data.parquet")), ReadPlan(COLUMNS, 10))
    )
    for chunk in chunks:  # slices of batches, some spanning two row groups
        copy = pickle.loads(pickle.dumps(chunk))
        assert chunk.table is not None
        assert copy.table is not None
        assert copy.table.equals(chunk.table)
        assert (copy.seq, copy.file, copy.rows.tolist()) == (
            chunk.seq,
            chunk.file,
            chunk.rows.tolist(),
        )


def test_csv_columns_named_in_the_plan_get_a_type_per_chunk(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,1\n2,2\n3,x3\n4,4\n")
    plan = ReadPlan(COLUMNS, 2, typed_columns=("b",))
    tables = [chunk.table for chunk in iter_chunks(discover_inputs(str(path)), plan)]
    assert [t.schema.field("b").type for t in tables if t is not None] == [
        pa.int64(),
        pa.string(),
    ]
    assert [t.schema.field("a").type for t in tables if t is not None] == [pa.string()] * 2


def test_a_csv_chunk_cut_from_several_reader_blocks_is_typed_as_a_whole(tmp_path: Path) -> None:
    rows = 60_000  # about 1 MiB: several of the reader's blocks, each parsed on its own
    ids = [str(i) for i in range(rows - 1)] + ["last"]
    frame = pd.DataFrame({"a": ids, "b": ["x" * 10] * rows})
    frame.to_csv(tmp_path / "data.csv", index=False)
    plan = ReadPlan(COLUMNS, rows, typed_columns=("a",))
    [chunk] = iter_chunks(discover_inputs(str(tmp_path / "data.csv")), plan)
    assert chunk.table is not None
    assert chunk.table.column("a").num_chunks > 1
    assert chunk.table.column("a").to_pylist() == ids  # the last block's text decides for all


def test_parquet_columns_keep_the_file_s_types(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": np.arange(3), "b": ["1", "2", "3"]})  # b is text in the file
    frame.to_parquet(tmp_path / "data.parquet")
    plan = ReadPlan(COLUMNS, 10, typed_columns=COLUMNS)
    [chunk] = iter_chunks(discover_inputs(str(tmp_path / "data.parquet")), plan)
    assert chunk.table is not None
    assert chunk.table.to_pydict() == {"a": [0, 1, 2], "b": ["1", "2", "3"]}
