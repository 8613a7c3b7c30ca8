"""Alembic environment: runs on the connection the registry hands it."""

from __future__ import annotations

from alembic import context

from mlserve.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # invoked from the alembic command line
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    connection = engine.connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
