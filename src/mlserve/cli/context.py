"""What every command shares: global options, the settings they build, and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from mlserve.types import current_actor

if TYPE_CHECKING:
    from mlserve.registry import RegistryStore
    from mlserve.settings import Settings

console = Console()
"""Standard output, for results."""
err_console = Console(stderr=True)
"""Standard error, for progress and problems."""


@dataclass(slots=True)
class CliContext:
    """Global flags, turned into Settings once per command with that command's own flags."""

    config: Path | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    _store: RegistryStore | None = None

    def settings(self, **command_flags: Any) -> Settings:
        """Settings from every source; command flags beat global flags."""
        from mlserve.settings import load_settings  # pydantic: not for `mlserve --version`

        return load_settings(self.config, **{**self.flags, **command_flags})

    def store(self) -> RegistryStore:
        """The registry the settings name (opened, and migrated, on first use)."""
        if self._store is None:
            # SQLAlchemy: only commands that need it
            from mlserve.registry.opening import open_registry

            self._store = open_registry(self.settings())
        return self._store


def context(ctx: typer.Context) -> CliContext:
    """The CliContext the main callback stored."""
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):  # a command invoked without the main callback
        obj = CliContext()
        ctx.find_root().obj = obj
    return obj


actor = current_actor
"""Who is acting, for audit trails."""
