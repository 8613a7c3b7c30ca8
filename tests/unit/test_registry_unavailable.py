"""Database.unavailable: which errors mean the registry's database is down, said naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError

from mlserve.errors import RegistryUnavailable
from mlserve.registry import RegistryStore


class DriverError(Exception):
    """Stands in for a driver's exception inside SQLAlchemy's wrapper."""


def test_a_connection_failure_names_the_database_with_its_password_hidden(
    registry_store: RegistryStore,
) -> None:
    refused = OperationalError(
        "SELECT 1", {}, DriverError("connection failed: Connection refused\n\tIs the server up?")
    )
    error = registry_store.unavailable(refused)
    assert isinstance(error, RegistryUnavailable)
    assert str(error) == (
        f"the registry database {registry_store.safe_url} cannot be reached: "
        "connection failed: Connection refused Is the server up?"
    )
    closed = InterfaceError("SELECT 1", {}, DriverError("the connection is closed"))
    assert isinstance(registry_store.unavailable(closed), RegistryUnavailable)
    assert registry_store.unavailable(error) is error


@pytest.mark.parametrize(
    "error",
    [KeyError("a bug"), ProgrammingError("SELEC 1", {}, DriverError("syntax error"))],
)
def test_anything_else_is_not_the_database_being_down(
    registry_store: RegistryStore, error: Exception
) -> None:
    assert registry_store.unavailable(error) is None


def test_the_password_never_shows() -> None:
    with pytest.raises(RegistryUnavailable) as raised:
        RegistryStore(
            "postgresql+psycopg://mlserve:s3cret@127.0.0.1:1/mlserve", "artifacts", Path("cache")
        )
    assert "s3cret" not in str(raised.value)
    assert "postgresql+psycopg://mlserve:***@127.0.0.1:1/mlserve cannot be reached" in str(
        raised.value
    )
