"""Migration 0004 (trace contexts on runs and steps), from 0003 with data, on both databases."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from flowkit.store import Store, migrate
from flowkit.store.schema import SCHEMA_REVISION

T0 = datetime(2027, 1, 20, 9, 0, tzinfo=timezone.utc)
CARRIER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_upgrading_from_0003_keeps_runs_and_adds_empty_trace_contexts(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0003")
        old_runs = sa.table(
            "flowkit_runs",
            *(sa.column(c) for c in ("id", "flow", "status")),
            sa.column("created_at", sa.DateTime(timezone=True)),
        )
        with engine.begin() as conn:
            conn.execute(
                old_runs.insert().values(id="old", flow="f", status="succeeded", created_at=T0)
            )
    finally:
        engine.dispose()

    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert migrate.current_revision(store.db.sql) == SCHEMA_REVISION
        old = store.get_run("old")
        assert old is not None and old.trace_context is None and old.status.value == "succeeded"
        fresh = store.runs.create(
            run_id="new", flow="f", key=None, input=1, first=[], trace_context=CARRIER
        )
        assert fresh.created
        new = store.get_run("new")
        assert new is not None and new.trace_context == CARRIER
    finally:
        store.dispose()
