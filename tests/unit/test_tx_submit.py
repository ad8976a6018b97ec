"""``submit(connection=...)``: a run stored in the host application's own transaction.

On the embedded default (memory broker, SQLite): the host's tables live in the store's
SQLite file, its engine is its own (``sa.create_engine`` on the same file). What is sent
is read from the memory broker's queues with the embedded worker off, what runs with it
on. PostgreSQL and RabbitMQ, with real worker processes: tests/integration/
test_tx_submit_rabbitmq.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from pydantic import BaseModel
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import flowkit
from flowkit.store.sweep import UNSENT
from flowkit.testing import embedded


class Order(BaseModel):
    order_id: int


@flowkit.stage(queue="tx.charge")
def charge(order: Order) -> int:
    return order.order_id * 10


@flowkit.stage(queue="tx.ship")
def ship(cents: int) -> str:
    return f"shipped {cents}"


orders = flowkit.Pipeline("tx-orders", [charge, ship])
audit = flowkit.Workflow("tx-audit", on="order:placed")


@audit.step(queue="tx.audit")
def record(order: Order) -> str:
    return f"audited {order.order_id}"


placed = flowkit.Workflow("tx-placed", on="order:placed")


@placed.step(queue="tx.placed")
def note(order: Order) -> int:
    return order.order_id


app = flowkit.App("tx", flows=[orders, audit, placed])

business = sa.MetaData()
shop_orders = sa.Table(
    "shop_orders",
    business,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(32)),
)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[flowkit.App, sa.Engine]]:
    """The App on the embedded default, and the host's own engine on the same file."""
    with embedded(app, tmp_path, threads=2) as a:
        a.store  # noqa: B018 - the schema exists before any host transaction begins
        engine = sa.create_engine(a.settings.database_url)
        business.create_all(engine)
        try:
            yield a, engine
        finally:
            engine.dispose()


@pytest.fixture
def quiet(host: tuple[flowkit.App, sa.Engine]) -> tuple[flowkit.App, sa.Engine]:
    """:func:`host` with the embedded worker off: messages stay in the memory broker."""
    host[0].configure(embedded_worker=False)
    return host


def sent(a: flowkit.App) -> int:
    broker = a.broker
    assert isinstance(broker, StubBroker)
    return sum(q.qsize() for name, q in broker.queues.items() if name.startswith("tx."))


def read(a: flowkit.App, sql: str, *params: Any) -> list[Any]:
    """Rows read on a plain sqlite3 connection: a reader, which never waits for the host's
    lock (flowkit's own transactions begin ``IMMEDIATE``, as writers)."""
    with contextlib.closing(sqlite3.connect(a.settings.database_url[len("sqlite:///") :])) as db:
        return db.execute(sql, params).fetchall()


def count_runs(a: flowkit.App) -> int:
    return int(read(a, "SELECT count(*) FROM flowkit_runs")[0][0])


def entry_marks(a: flowkit.App, run_id: str) -> list[Any]:
    return [r[0] for r in read(a, "SELECT republishes FROM flowkit_steps WHERE run_id = ?", run_id)]


# -- a Session ---------------------------------------------------------------------------
def test_a_session_commit_publishes_after_it_and_the_run_succeeds(
    host: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = host
    with Session(engine) as session:
        session.execute(shop_orders.insert().values(id=1))
        run = orders.submit({"order_id": 1}, key="order-1", connection=session)
        session.execute(shop_orders.update().values(run_id=run.id))
        assert count_runs(a) == 0  # not committed: flowkit's own connections see nothing
        session.commit()
    assert run.created
    assert run.result(timeout=20) == "shipped 10"
    with engine.connect() as conn:
        assert conn.execute(sa.select(shop_orders.c.run_id)).scalar_one() == run.id


def test_a_rollback_leaves_no_run_and_sends_nothing(quiet: tuple[flowkit.App, sa.Engine]) -> None:
    a, engine = quiet
    with Session(engine) as session:
        session.execute(shop_orders.insert().values(id=1))
        orders.submit({"order_id": 1}, key="order-1", connection=session)
        session.rollback()
        session.execute(shop_orders.insert().values(id=2))
        session.commit()  # the next transaction's commit publishes nothing of the first
    assert count_runs(a) == 0
    assert sent(a) == 0


def test_nothing_is_sent_before_the_commit_and_every_submit_after_it(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    with Session(engine) as session:
        one = orders.submit({"order_id": 1}, connection=session)
        many = orders.submit_many([{"order_id": 2}, {"order_id": 3}], connection=session)
        emitted = a.emit("order:placed", {"order_id": 4}, key="o4", connection=session)
        assert sent(a) == 0
        session.commit()
    assert sent(a) == 1 + 2 + 2
    assert {r.flow for r in emitted} == {"tx-audit", "tx-placed"}
    assert count_runs(a) == 5
    assert all(entry_marks(a, r.id) == [None] for r in [one, *many, *emitted])


def test_a_savepoint_rolled_back_drops_its_runs_and_keeps_the_others(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, _ = quiet
    # pysqlite's own transaction handling breaks SAVEPOINT: SQLAlchemy's documented recipe.
    engine = sa.create_engine(a.settings.database_url)
    sa.event.listen(engine, "connect", lambda dbapi, _: setattr(dbapi, "isolation_level", None))
    sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    with Session(engine) as session:
        kept = orders.submit({"order_id": 1}, key="kept", connection=session)
        savepoint = session.begin_nested()
        orders.submit({"order_id": 2}, key="dropped", connection=session)
        savepoint.rollback()
        with session.begin_nested():
            released = orders.submit({"order_id": 3}, key="released", connection=session)
        session.commit()
    engine.dispose()
    assert sent(a) == 2
    assert {r.key for r in a.runs()} == {"kept", "released"}
    assert kept.created and released.created


def test_a_session_closed_without_commit_publishes_nothing_later(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    session = Session(engine)
    orders.submit({"order_id": 1}, connection=session)
    session.close()  # rolls back
    session.execute(shop_orders.insert().values(id=1))
    session.commit()
    session.close()
    assert count_runs(a) == 0
    assert sent(a) == 0


def test_a_known_key_returns_its_run_and_the_transaction_goes_on(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    first = orders.submit({"order_id": 1}, key="order-1")
    with Session(engine) as session:
        again = orders.submit({"order_id": 1}, key="order-1", connection=session)
        twice = orders.submit({"order_id": 9}, key="fresh", connection=session)
        same = orders.submit({"order_id": 9}, key="fresh", connection=session)
        session.execute(shop_orders.insert().values(id=1))  # the transaction is not aborted
        session.commit()
    assert again.id == first.id and not again.created
    assert same.id == twice.id and twice.created and not same.created
    assert count_runs(a) == 2


def test_an_invalid_input_raises_as_today_and_writes_nothing(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    with Session(engine) as session:
        session.execute(shop_orders.insert().values(id=1))
        with pytest.raises(flowkit.InputValidationError):
            orders.submit({"order_id": "one"}, connection=session)
        with pytest.raises(flowkit.InputValidationError):
            orders.submit_many([{"order_id": 1}, {}], connection=session)
        session.commit()
    assert count_runs(a) == 0
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(shop_orders)).scalar() == 1


def test_a_scoped_session_stands_for_its_current_session(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    scoped = scoped_session(sessionmaker(engine))
    try:
        run = orders.submit({"order_id": 1}, connection=scoped)
        assert sent(a) == 0
        scoped.commit()
    finally:
        scoped.remove()
    assert sent(a) == 1 and count_runs(a) == 1 and run.created


# -- a bare Connection -------------------------------------------------------------------
def test_a_bare_connection_commit_is_published_by_the_sweep(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    with engine.begin() as conn:
        run = orders.submit({"order_id": 1}, key="order-1", connection=conn)
    assert sent(a) == 0  # no hook knows the commit happened
    assert entry_marks(a, run.id) == [UNSENT]
    assert a.engine.sweep() == 1  # whatever the evidence: no worker is even running
    assert sent(a) == 1
    assert entry_marks(a, run.id) == [1]
    assert a.engine.sweep() == 0  # once


def test_a_bare_connection_rolled_back_leaves_nothing_for_the_sweep(
    quiet: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = quiet
    with engine.connect() as conn:
        conn.execute(shop_orders.insert().values(id=1))
        orders.submit({"order_id": 1}, connection=conn)
        conn.rollback()
    assert a.engine.sweep() == 0
    assert count_runs(a) == 0 and sent(a) == 0


def test_a_bare_connection_run_succeeds_on_the_embedded_worker(
    host: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = host
    a.start_worker(threads=2)  # running before the host's transaction takes SQLite's lock
    started = time.monotonic()
    with engine.begin() as conn:
        conn.execute(shop_orders.insert().values(id=1))
        run = orders.submit({"order_id": 1}, connection=conn)
    committed = time.monotonic()
    assert run.result(timeout=30) == "shipped 10"
    # The latency after the commit is the in-process sweep's interval (1 s), reported only.
    print(f"bare Connection: run done {time.monotonic() - committed:.2f}s after the commit")
    print(f"(transaction: {committed - started:.3f}s)")


def test_sqlite_lock_held_and_no_worker_yet_a_connection_is_refused(
    host: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = host
    with engine.connect() as conn:
        conn.execute(shop_orders.insert().values(id=1))  # SQLite's write lock is taken
        with pytest.raises(flowkit.ConfigurationError, match="start it first"):
            orders.submit({"order_id": 1}, connection=conn)
        conn.commit()
    assert count_runs(a) == 0


def test_sqlite_lock_held_and_no_worker_yet_a_session_starts_it_after_the_commit(
    host: tuple[flowkit.App, sa.Engine],
) -> None:
    a, engine = host
    with Session(engine) as session:
        session.execute(shop_orders.insert().values(id=1))
        run = orders.submit({"order_id": 1}, connection=session)
        assert a._beat is None  # its registration would wait for this transaction
        session.commit()
    assert a._beat is not None
    assert run.result(timeout=20) == "shipped 10"


# -- refused -----------------------------------------------------------------------------
def test_another_sqlite_file_is_refused_naming_both(
    quiet: tuple[flowkit.App, sa.Engine], tmp_path: Path
) -> None:
    a, _ = quiet
    other = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        with other.connect() as conn, pytest.raises(flowkit.ConfigurationError) as got:
            orders.submit({"order_id": 1}, connection=conn)
    finally:
        other.dispose()
    message = str(got.value)
    assert str((tmp_path / "other.db").resolve()) in message
    assert str((tmp_path / "flowkit-test.db").resolve()) in message
    assert count_runs(a) == 0


def test_an_in_memory_sqlite_database_is_refused(quiet: tuple[flowkit.App, sa.Engine]) -> None:
    memory = sa.create_engine("sqlite://")
    with memory.connect() as conn, pytest.raises(flowkit.ConfigurationError, match="in-memory"):
        orders.submit({"order_id": 1}, connection=conn)


def test_something_else_than_a_connection_is_refused(quiet: tuple[flowkit.App, sa.Engine]) -> None:
    a, engine = quiet
    with pytest.raises(flowkit.ConfigurationError, match="Connection or Session, not Engine"):
        orders.submit({"order_id": 1}, connection=engine)  # type: ignore[arg-type]
    assert count_runs(a) == 0
