"""``FLOWKIT_DATABASE_POOLER``: the setting, and what it changes on the engines.

Without it (the default) the engines are as they always were: the claims engine's
``synchronous_commit=off`` startup option and psycopg's prepared statements. With
``transaction`` no connection carries session state: no startup options, no prepared
statements, claims that turn the WAL flush wait off inside their own statement, and
no ``LISTEN`` unless ``FLOWKIT_LISTEN_URL`` is direct. The real PgBouncer is in
tests/integration/test_pgbouncer.py and the fault suite.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import flowkit
from flowkit import App, ConfigurationError, RunStatus
from flowkit._ids import new_id
from flowkit.config import Settings
from flowkit.run import Finishes
from flowkit.store import NewStep, Outcome, Store
from flowkit.store import transitions as t
from flowkit.store.db import Database, _pg_connect_args, utcnow
from flowkit.store.rows import ChainClaim, RunEnd, Source

PG = "postgresql://postgres@127.0.0.1:5432/app"


@pytest.fixture(autouse=True)
def _no_pooler_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLOWKIT_DATABASE_POOLER", raising=False)
    monkeypatch.delenv("FLOWKIT_LISTEN_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml of this repository's


# -- the setting ---------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "none", "None", " none "])
def test_unset_or_none_is_a_direct_connection(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_DATABASE_POOLER", value)
    assert Settings.resolve("memory://", PG).database_pooler is None


@pytest.mark.parametrize("value", ["transaction", "Transaction", " TRANSACTION "])
def test_transaction(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_DATABASE_POOLER", value)
    settings = Settings.resolve("memory://", PG)
    assert settings.database_pooler == "transaction"
    assert "database_pooler='transaction'" in repr(settings)


@pytest.mark.parametrize("value", ["session", "pgbouncer", "statement", "1"])
def test_an_unknown_pooler_names_the_variable_and_the_values(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_DATABASE_POOLER", value)
    with pytest.raises(ConfigurationError) as err:
        Settings.resolve("memory://", PG)
    message = str(err.value)
    assert f"FLOWKIT_DATABASE_POOLER={value!r}" in message
    assert "none" in message and "transaction" in message


def test_the_project_sets_it_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.flowkit]\ndatabase_pooler = "transaction"\n')
    assert Settings.resolve("memory://", PG).database_pooler == "transaction"
    monkeypatch.setenv("FLOWKIT_DATABASE_POOLER", "none")
    assert Settings.resolve("memory://", PG).database_pooler is None


def test_a_bad_project_pooler_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.flowkit]\ndatabase_pooler = "session"\n')
    with pytest.raises(ConfigurationError, match=r"pyproject.toml: \[tool.flowkit\] database_po"):
        Settings.resolve("memory://", PG)


def test_the_listen_url_is_a_postgresql_url_and_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_LISTEN_URL", "postgresql://u:s3cret-pw@db:5432/app")
    settings = Settings.resolve("memory://", PG)
    assert settings.listen_url == "postgresql://u:s3cret-pw@db:5432/app"
    assert "s3cret-pw" in settings.secrets()
    assert "s3cret-pw" not in repr(settings)
    monkeypatch.setenv("FLOWKIT_LISTEN_URL", "amqp://u:s3cret-pw@db/")
    with pytest.raises(ConfigurationError, match="FLOWKIT_LISTEN_URL") as err:
        Settings.resolve("memory://", PG)
    assert "s3cret-pw" not in str(err.value)


# -- the engines -----------------------------------------------------------------------
def test_connect_args_without_a_pooler_are_unchanged() -> None:
    assert _pg_connect_args(durable=True, pooler=None) == {}
    assert _pg_connect_args(durable=False, pooler=None) == {"options": "-c synchronous_commit=off"}


def test_connect_args_behind_a_pooler_have_no_options_and_no_prepared_statements() -> None:
    assert _pg_connect_args(durable=True, pooler="transaction") == {"prepare_threshold": None}
    with pytest.raises(ConfigurationError, match="SET LOCAL"):
        _pg_connect_args(durable=False, pooler="transaction")


def test_without_a_pooler_claims_have_their_own_engine_and_statements() -> None:
    db = Database(PG, pool_size=2)  # connects to nothing yet
    try:
        assert db._claims.engine is not db.sql.engine
        assert db.unflushed(t.CLAIM) is t.CLAIM
        assert db.unflushed(t.COMPLETE_AND_CLAIM) is t.COMPLETE_AND_CLAIM
    finally:
        db.dispose()


def test_behind_a_pooler_claims_share_the_pool_and_say_it_in_the_statement() -> None:
    db = Database(PG, pool_size=2, pooler="transaction")
    try:
        assert db._claims is db._autocommit  # one pool: half the connections
        for stmt in (t.CLAIM, t.CLAIM_AND_START, t.COMPLETE_AND_CLAIM):
            made = db.unflushed(stmt)
            assert made is not stmt and db.unflushed(stmt) is made  # made once
            assert "set_config('synchronous_commit', 'off', true)" in str(made)
    finally:
        db.dispose()


def test_sqlite_ignores_the_pooler(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'f.db'}", pooler="transaction")
    try:
        assert db.unflushed(t.CLAIM) is t.CLAIM
    finally:
        db.dispose()


# -- on the real PostgreSQL (direct: what the connections carry) -------------------------
@pytest.fixture
def pooled(pg_url: str) -> Iterator[Database]:
    db = Database(pg_url, pool_size=2, pooler="transaction")
    yield db
    db.dispose()


def _session(conn: Any) -> tuple[str, Any]:
    setting = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
    return setting, conn.connection.dbapi_connection.prepare_threshold


def test_direct_connections_are_as_before(pg_url: str) -> None:
    db = Database(pg_url, pool_size=2)
    try:
        with db.autocommit(durable=False) as conn:
            assert _session(conn) == ("off", 5)  # the startup option; psycopg's default
        with db.transaction() as conn:
            assert _session(conn) == ("on", 5)
    finally:
        db.dispose()


def test_pooled_connections_carry_no_session_state(pooled: Database) -> None:
    with pooled.autocommit(durable=False) as conn:
        assert _session(conn) == ("on", None)
    with pooled.transaction() as conn:
        assert _session(conn) == ("on", None)
        pooled.wait_for_wal(conn, False)  # SET LOCAL: this transaction only
        assert _session(conn) == ("off", None)
    with pooled.transaction() as conn:
        assert _session(conn) == ("on", None)


def test_the_setting_in_a_statement_lasts_only_for_its_own_commit(pooled: Database) -> None:
    with pooled.autocommit(durable=False) as conn:
        conn.exec_driver_sql("CREATE TABLE pooler_probe (n int)")
        probe = sa.table("pooler_probe", sa.column("n"))
        stmt = pooled.unflushed(probe.insert().values(n=1).returning(probe.c.n))
        row = conn.execute(stmt).one()
        assert row.n == 1 and row.no_wal_wait == "off"
        assert _session(conn) == ("on", None)  # reset when that statement committed


def test_a_pooled_store_claims_chains_and_ends_a_run(pg_url: str) -> None:
    """The one-statement claim, chained completion and end of a pooled store."""
    store = Store.open(pg_url, pool_size=2, pooler="transaction")
    try:
        first = NewStep(id=new_id(), name="a", queue="q", input={"i": 0})
        run_id = store.runs.create(run_id=new_id(), flow="f", key=None, input={}, first=[first])
        run_id = run_id.run_id
        claim = store.runs.claim(first.id, "m1", lease_ms=9000, starts_run=True, redelivered=False)
        assert claim is not None and claim.attempts == 1 and claim.input == {"i": 0}
        assert store.runs.claim(first.id, "m2", lease_ms=9000, starts_run=True) is None
        nxt = NewStep(id=new_id(), name="b", queue="q", input={"i": 1})
        lease = utcnow() + timedelta(seconds=9)
        chained = store.runs.complete(
            first.id, "m1", run_id, Outcome(output=1, inserts=[nxt], chain=ChainClaim(lease))
        )
        assert chained is not None and chained.chained is not None
        end = RunEnd(sinks=(Source("b", each=False),))
        assert store.runs.complete(nxt.id, "m1", run_id, Outcome(output=2, end=end)) is not None
        assert store.get_run(run_id).status is RunStatus.SUCCEEDED  # type: ignore[union-attr]
    finally:
        store.dispose()


def test_behind_a_pooler_wait_polls_unless_a_listen_url_is_given(pg_url: str) -> None:
    store = Store(pg_url, pool_size=1, pooler="transaction")
    finishes = Finishes()
    try:
        assert finishes.listen(store) is None  # polling: LISTEN cannot work there
    finally:
        store.dispose()
    direct = Store(pg_url, pool_size=1, pooler="transaction", listen_url=pg_url)
    try:
        listener = finishes.listen(direct)
        assert listener is not None
    finally:
        finishes.close()
        direct.dispose()


def test_the_app_threads_the_settings_to_its_store(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_DATABASE_POOLER", "transaction")
    monkeypatch.setenv("FLOWKIT_LISTEN_URL", pg_url)
    app = App("pooled", database_url=pg_url, embedded_worker=False)
    try:
        assert app.store.db.pooler == "transaction"
        assert app.store.db.listen_url == pg_url
    finally:
        app.close()


# -- nothing in flowkit relies on session state ---------------------------------------
SESSION_STATE = {
    "a session-level advisory lock": re.compile(r"pg_(try_)?advisory_(lock|unlock)\b"),
    "a session-level SET": re.compile(r"""["']\s*SET\s+(?!LOCAL\b)[a-z_]+\s*(=|TO\b)""", re.I),
    "a session-level set_config": re.compile(r"set_config\([^)]*,\s*false\s*\)", re.I),
    "a temporary table": re.compile(r"\bCREATE\s+TEMP(ORARY)?\b|prefixes=\[.TEMPORARY", re.I),
    "a prepared statement": re.compile(r"\bPREPARE\s+\w+\s+AS\b", re.I),
}


def test_no_module_relies_on_session_state() -> None:
    """What a transaction pooler breaks, in any source file (migrations included);
    ``LISTEN`` only in store/notify.py, which never goes through the pooler."""
    root = Path(flowkit.__file__).parent
    found = [
        f"{path.relative_to(root)}: {what}"
        for path in sorted(root.rglob("*.py"))
        for what, pattern in SESSION_STATE.items()
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
    listens = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"""["']LISTEN\s""", p.read_text(encoding="utf-8"))
    ]
    assert listens == [str(Path("store") / "notify.py")]
