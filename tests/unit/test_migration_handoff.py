"""Migration 0007 (the concurrency hand-off's mark on steps), from 0006 with data, on both
databases."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from flowkit.store import Store, migrate
from flowkit.store.schema import SCHEMA_REVISION, steps

T0 = datetime(2027, 3, 18, 9, 0, tzinfo=timezone.utc)


def test_upgrading_from_0006_keeps_steps_none_waiting_for_a_slot(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0006")
            conn.execute(
                sa.text(
                    "INSERT INTO flowkit_runs (id, flow, status, created_at) "
                    "VALUES ('r', 'f', 'running', :t)"
                ),
                {"t": T0},
            )
            for sid, status in (("s1", "queued"), ("s2", "running")):
                conn.execute(
                    sa.text(
                        "INSERT INTO flowkit_steps (id, run_id, name, status, queue, attempts, "
                        "created_at, limit_key) VALUES (:id, 'r', 'a', :st, 'q', 0, :t, 'f.a')"
                    ),
                    {"id": sid, "st": status, "t": T0},
                )
    finally:
        engine.dispose()

    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert migrate.current_revision(store.db.sql) == SCHEMA_REVISION
        with store.db.transaction() as conn:
            rows = conn.execute(sa.select(steps).order_by(steps.c.id)).all()
            assert [(r.id, r.status, r.limit_key, r.waits_for) for r in rows] == [
                ("s1", "queued", "f.a", None),
                ("s2", "running", "f.a", None),
            ]
            conn.execute(steps.update().where(steps.c.id == "s1").values(waits_for="conc:f.a"))
        indexes = {i["name"] for i in sa.inspect(store.db.sql).get_indexes("flowkit_steps")}
        assert "ix_flowkit_steps_waits" in indexes
        with store.db.transaction() as conn:
            waiting = conn.execute(
                sa.select(steps.c.id).where(steps.c.waits_for == "conc:f.a")
            ).scalars()
            assert list(waiting) == ["s1"]
    finally:
        store.dispose()

    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:  # and back: the column and its index go
            command.downgrade(migrate._config(conn), "0006")
            columns = {c["name"] for c in sa.inspect(conn).get_columns("flowkit_steps")}
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("flowkit_steps")}
        assert "waits_for" not in columns and "limit_key" in columns
        assert "ix_flowkit_steps_waits" not in indexes
    finally:
        engine.dispose()
