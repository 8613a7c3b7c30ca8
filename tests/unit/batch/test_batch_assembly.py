"""Assembling OUTPUT from chunk parts: in chunk order however they finish, streamed or not."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mlserve.batch.assembly import OutputAssembler
from mlserve.batch.checkpoint import ChunkReport, JobState
from mlserve.batch.scoring import ScoredChunk
from mlserve.batch.writers import OutputTarget, write_chunk

FALLBACK = pa.schema([("id", pa.string()), ("prediction", pa.string())])


def part(ids: list[object]) -> pa.Table:
    """Output rows of a chunk: its ids, and a prediction each."""
    return pa.table({"id": ids, "prediction": [f"p{i}" for i in ids]})


def finished_chunks(state: JobState, tables: list[pa.Table | None]) -> list[ChunkReport]:
    """Write chunk ``i``'s files for every table (None: every record was rejected)."""
    state.start({"format": "test"})
    return [
        write_chunk(state, seq, ScoredChunk(table, ()), records=2, loaded_by="", with_id=True)
        for seq, table in enumerate(tables)
    ]


def assemble(tmp_path: Path, tables: list[pa.Table | None], *, stream: bool) -> pa.Table:
    """OUTPUT of chunks with ``tables``, reported in a shuffled order."""
    target = OutputTarget.from_path(tmp_path / f"out-{stream}.parquet", None)
    state = JobState.for_output(target.path, target.part_format)
    reports = finished_chunks(state, tables)
    with OutputAssembler(state, target, stream=stream) as assembler:
        for report in random.Random(7).sample(reports, len(reports)):
            assembler.add(report)
        assembler.finish(reports, FALLBACK)
    assert not list(state.root.glob(".tmp-*"))
    return pq.read_table(target.path)


def test_parts_land_in_chunk_order_whether_streamed_or_assembled_at_the_end(
    tmp_path: Path,
) -> None:
    tables = [part([0, 1]), None, part([4, 5]), part([6, 7]), part([8, 9])]
    streamed = assemble(tmp_path, tables, stream=True)
    assert streamed.column("id").to_pylist() == [0, 1, 4, 5, 6, 7, 8, 9]
    assert streamed.equals(assemble(tmp_path, tables, stream=False))


def test_parts_that_disagree_on_a_type_get_one_schema(tmp_path: Path) -> None:
    tables = [part([0, 1]), part(["x2", "x3"]), part([4, 5])]  # a CSV file among Parquet ones
    streamed = assemble(tmp_path, tables, stream=True)
    assert streamed.column("id").to_pylist() == ["0", "1", "x2", "x3", "4", "5"]
    assert streamed.equals(assemble(tmp_path, tables, stream=False))


def test_a_job_stopped_midway_leaves_no_output_and_no_streamed_file(tmp_path: Path) -> None:
    target = OutputTarget.from_path(tmp_path / "out.parquet", None)
    state = JobState.for_output(target.path, target.part_format)
    reports = finished_chunks(state, [part([0, 1]), part([2, 3])])
    assembler = OutputAssembler(state, target, stream=True)
    with assembler:
        assembler.add(reports[0])  # streamed; the job stops before the second chunk finishes
    assert not target.path.exists()
    assert not list(state.root.glob(".tmp-*"))
