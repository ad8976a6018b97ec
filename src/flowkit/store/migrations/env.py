"""Alembic environment for flowkit's schema; run through :mod:`flowkit.store.migrate`."""

from __future__ import annotations

from alembic import context

from flowkit.store.schema import metadata

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="flowkit_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
