"""Migration 0009 (child flows: a run's parent run and step), from 0008 with data, on both
databases."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from flowkit.store import Store, migrate
from flowkit.store.schema import SCHEMA_REVISION, runs

T0 = datetime(2027, 5, 1, 9, 0, tzinfo=timezone.utc)


def _engine(database_url: str) -> sa.Engine:
    return sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))


def test_upgrading_from_0008_leaves_every_run_without_a_parent(database_url: str) -> None:
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0008")
            conn.execute(
                sa.text(
                    "INSERT INTO flowkit_runs (id, flow, status, created_at) "
                    "VALUES ('r1', 'f', 'running', :t)"
                ),
                {"t": T0},
            )
    finally:
        engine.dispose()

    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert migrate.current_revision(store.db.sql) == SCHEMA_REVISION == "0009"
        with store.db.transaction() as conn:
            row = conn.execute(sa.select(runs)).one()
        assert (row.id, row.parent_run_id, row.parent_step_id) == ("r1", None, None)
        assert store.calls.children("r1") == [] and store.calls.parent("r1") is None
        indexes = {i["name"] for i in sa.inspect(store.db.sql).get_indexes("flowkit_runs")}
        assert {"ix_flowkit_runs_parent_run", "ix_flowkit_runs_parent_step"} <= indexes
    finally:
        store.dispose()

    engine = _engine(database_url)
    try:
        with engine.begin() as conn:  # and back: the columns and their indexes go
            command.downgrade(migrate._config(conn), "0008")
            columns = {c["name"] for c in sa.inspect(conn).get_columns("flowkit_runs")}
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("flowkit_runs")}
        assert "parent_run_id" not in columns and "parent_step_id" not in columns
        assert "fingerprint" in columns
        assert "ix_flowkit_runs_parent_run" not in indexes
    finally:
        engine.dispose()
