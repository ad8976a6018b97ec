"""Migration 0005 (the recovery sweep's evidence), from 0004 with data, on both databases."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from flowkit.store import Store, migrate
from flowkit.store.db import aware
from flowkit.store.schema import SCHEMA_REVISION, steps, workers

T0 = datetime(2027, 2, 20, 9, 0, tzinfo=timezone.utc)


def test_upgrading_from_0004_keeps_steps_and_workers_without_evidence(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0004")
            conn.execute(
                sa.text(
                    "INSERT INTO flowkit_runs (id, flow, status, created_at) "
                    "VALUES ('r', 'f', 'running', :t)"
                ),
                {"t": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO flowkit_steps (id, run_id, name, status, queue, attempts, "
                    "created_at, scheduled_at) VALUES ('s', 'r', 'a', 'queued', 'q', 0, :t, :t)"
                ),
                {"t": T0},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO flowkit_workers (id, host, pid, threads, version, started_at, "
                    "heartbeat_at) VALUES ('w', 'h', 1, 4, '0', :t, :t)"
                ),
                {"t": T0},
            )
    finally:
        engine.dispose()

    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert migrate.current_revision(store.db.sql) == SCHEMA_REVISION
        with store.db.transaction() as conn:
            step = conn.execute(sa.select(steps).where(steps.c.id == "s")).one()
            worker = conn.execute(sa.select(workers).where(workers.c.id == "w")).one()
        assert step.status == "queued" and step.republished_at is None
        assert step.republishes is None and worker.free_since is None
        store.workers.heartbeat("w", free_since=T0)
        with store.db.transaction() as conn:
            since = conn.execute(sa.select(workers.c.free_since)).scalar_one()
        assert aware(since) == T0
    finally:
        store.dispose()
