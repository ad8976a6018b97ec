"""Migration 0006 (a run's end announced by NOTIFY), from 0005 with data, on both databases."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import command

from flowkit.store import Store, migrate
from flowkit.store.schema import SCHEMA_REVISION

T0 = datetime(2027, 3, 10, 9, 0, tzinfo=timezone.utc)


def _triggers(conn: sa.Connection) -> set[str]:
    if conn.dialect.name == "postgresql":
        sql = (
            "SELECT tgname FROM pg_trigger "
            "WHERE tgrelid = 'flowkit_runs'::regclass AND NOT tgisinternal"
        )
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return {r[0] for r in conn.execute(sa.text(sql))}


def _functions(conn: sa.Connection) -> set[str]:
    if conn.dialect.name != "postgresql":
        return set()
    sql = "SELECT proname FROM pg_proc WHERE proname LIKE 'flowkit%'"
    return {r[0] for r in conn.execute(sa.text(sql))}


def test_upgrading_from_0005_adds_the_trigger_on_postgresql_only(database_url: str) -> None:
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), "0005")
            conn.execute(
                sa.text(
                    "INSERT INTO flowkit_runs (id, flow, status, created_at) "
                    "VALUES ('old', 'f', 'running', :t)"
                ),
                {"t": T0},
            )
            assert _triggers(conn) == set()
    finally:
        engine.dispose()

    store = Store(database_url, pool_size=2)
    try:
        store.ensure_schema()
        assert migrate.current_revision(store.db.sql) == SCHEMA_REVISION
        pg = store.dialect == "postgresql"
        with store.db.transaction() as conn:
            assert _triggers(conn) == ({"flowkit_run_finished"} if pg else set())
            assert _functions(conn) == ({"flowkit_notify_run_finished"} if pg else set())
            # The trigger changes no row: the run ends as before.
            conn.execute(sa.text("UPDATE flowkit_runs SET status = 'succeeded' WHERE id = 'old'"))
        old = store.get_run("old")
        assert old is not None and old.status.value == "succeeded"

        with store.db.sql.begin() as conn:
            command.downgrade(migrate._config(conn), "0005")
        with store.db.transaction() as conn:
            assert _triggers(conn) == set() and _functions(conn) == set()
        assert migrate.current_revision(store.db.sql) == "0005"

        store.ensure_schema()  # and up again
        with store.db.transaction() as conn:
            assert _triggers(conn) == ({"flowkit_run_finished"} if pg else set())
    finally:
        store.dispose()
