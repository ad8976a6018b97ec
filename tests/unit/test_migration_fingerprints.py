"""Migration 0008 (flow fingerprints and the stranded mark on runs), from 0007 with data, on
both databases."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from flowkit.store import Store, migrate
from flowkit.store.schema import SCHEMA_REVISION, runs

T0 = datetime(2027, 4, 1, 9, 0, tzinfo=timezone.utc)


def _engine(database_url: str) -> sa.Engine:
    return sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))


def test_upgrading_from_0007_keeps_runs_unfingerprinted_and_none_stranded(
    database_url: str,
) -> None:
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0007")
            for rid, status in (("r1", "waiting"), ("r2", "succeeded")):
                conn.execute(
                    sa.text(
                        "INSERT INTO flowkit_runs (id, flow, status, created_at) "
                        "VALUES (:id, 'f', :st, :t)"
                    ),
                    {"id": rid, "st": status, "t": T0},
                )
    finally:
        engine.dispose()

    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert migrate.current_revision(store.db.sql) == SCHEMA_REVISION
        with store.db.transaction() as conn:
            rows = conn.execute(sa.select(runs).order_by(runs.c.id)).all()
        assert [(r.id, r.fingerprint, r.stranded) for r in rows] == [
            ("r1", None, None),
            ("r2", None, None),
        ]
        assert store.strands.mark("r1", "step `review` no longer exists")
        assert not store.strands.mark("r2", "a finished run is never stranded")
        assert [(r.id, r.reason) for r in store.strands.stranded()] == [
            ("r1", "step `review` no longer exists")
        ]
        # A run of no known fingerprint is one the deployed definition checks.
        assert [r.id for r in store.strands.differing("f", "0" * 16)] == []  # r1 is marked
        indexes = {i["name"] for i in sa.inspect(store.db.sql).get_indexes("flowkit_runs")}
        assert "ix_flowkit_runs_stranded" in indexes
    finally:
        store.dispose()

    engine = _engine(database_url)
    try:
        with engine.begin() as conn:  # and back: the columns and the index go
            command.downgrade(migrate._config(conn), "0007")
            columns = {c["name"] for c in sa.inspect(conn).get_columns("flowkit_runs")}
            indexes = {i["name"] for i in sa.inspect(conn).get_indexes("flowkit_runs")}
        assert "fingerprint" not in columns and "stranded" not in columns
        assert "trace_context" in columns
        assert "ix_flowkit_runs_stranded" not in indexes
    finally:
        engine.dispose()
