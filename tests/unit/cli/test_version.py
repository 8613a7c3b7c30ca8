"""`mlserve --version`, `-V` and `mlserve version` print the installed package's version."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from mlserve.cli.main import run


@pytest.mark.parametrize("argv", [["--version"], ["-V"], ["version"]])
def test_version_prints_the_installed_version_and_exits_0(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 0
    assert capsys.readouterr().out == f"mlserve {version('mlserve')}\n"


def test_version_flag_wins_over_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # were `models list` to run, its registry would land here
    assert run(["--version", "models", "list"]) == 0
    assert capsys.readouterr().out.startswith("mlserve ")
    assert not (tmp_path / ".mlserve").exists()
