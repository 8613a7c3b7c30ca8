"""The batch command's defaults match the batch API's."""

import inspect

from mlserve.batch import DEFAULT_CHUNK_ROWS
from mlserve.cli.batch_cmd import batch


def test_chunk_rows_default_matches_the_api() -> None:
    assert inspect.signature(batch).parameters["chunk_rows"].default == DEFAULT_CHUNK_ROWS
