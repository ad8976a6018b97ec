"""``submit(connection=...)`` on RabbitMQ + PostgreSQL with real ``flowkit worker``
processes: the run is stored in the host's transaction, next to its business row.

A rollback leaves no run and no message; a commit starts the run, right after it with a
Session, by a worker's sweep with a bare Connection; a process killed between its commit
and the publish leaves a run the sweep recovers, which runs once; 16 threads placing
orders under load make exactly one run per committed order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import flowkit

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
TARGET = f"{HERE / 'tx_flows.py'}:app"

import tx_flows  # noqa: E402
from helpers import (  # noqa: E402, F401 - fixtures
    Workers,
    bound_app,
    check_linear_runs,
    env_fixture,
    query,
    scalar,
    wait_for_runs,
    wait_until,
    workers_fixture,
)

FLOW = "tx-orders"
STAGES = ["charge", "ship"]


@pytest.fixture
def tx_app(pg_url: str, rabbitmq_url: str) -> Iterator[Any]:
    with bound_app(tx_flows.app, pg_url, rabbitmq_url) as app:
        yield app


@pytest.fixture
def host(tx_app: Any, pg_url: str) -> Iterator[sa.Engine]:
    """The host application's own engine on the test's database, with its table."""
    engine = sa.create_engine(pg_url, pool_size=16, max_overflow=4)
    tx_flows.business.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def depth(rabbitmq_url: str, queue: str = "tx.charge") -> int:
    """Ready messages in ``queue``, read on a connection of the test's own."""
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


def run_status(pg_url: str, run_id: str) -> str | None:
    return scalar(pg_url, "SELECT status FROM flowkit_runs WHERE id = %s", (run_id,))  # type: ignore[no-any-return]


def test_a_rollback_sends_nothing_and_a_commit_runs_once(
    tx_app: Any, host: sa.Engine, workers: Workers, pg_url: str, rabbitmq_url: str
) -> None:
    with Session(host) as session:
        kept, kept_run = tx_flows.place(session)
        session.commit()
    tx_app.engine.publisher.flush()
    assert depth(rabbitmq_url) == 1  # published right after the commit

    with Session(host) as session:
        _, dropped_run = tx_flows.place(session)
        session.rollback()
    with host.connect() as conn:
        _, bare_dropped = tx_flows.place(conn)
        conn.rollback()
    tx_app.engine.publisher.flush()
    assert depth(rabbitmq_url) == 1  # nothing more
    assert query(pg_url, "SELECT id FROM flowkit_runs") == [(kept_run,)]
    assert query(pg_url, "SELECT id, run_id FROM shop_orders") == [(kept, kept_run)]

    workers.start(TARGET, threads=2).wait_started()
    assert wait_for_runs(pg_url, FLOW, 1, timeout=30) == {"succeeded": 1}
    assert tx_app.run(kept_run).result(timeout=10) == kept * 10 + 1
    audit = check_linear_runs(pg_url, FLOW, STAGES)
    assert audit.runs == 1 and audit.max_attempts == 1
    assert {dropped_run, bare_dropped}.isdisjoint({r.id for r in tx_app.runs()})


def test_a_bare_connection_commit_is_published_by_a_workers_sweep(
    tx_app: Any, host: sa.Engine, workers: Workers, pg_url: str
) -> None:
    workers.start(TARGET, threads=2).wait_started()
    with host.connect() as conn:
        order_id, run_id = tx_flows.place(conn)
        conn.commit()
    committed = time.monotonic()
    wait_until(
        lambda: run_status(pg_url, run_id) == "succeeded", 30, what="the sweep to start the run"
    )
    took = time.monotonic() - committed
    print(f"bare Connection: run succeeded {took:.2f}s after the commit (sweep every 5 s)")
    assert scalar(pg_url, "SELECT output FROM flowkit_runs WHERE id = %s", (run_id,)) == (
        order_id * 10 + 1
    )
    assert check_linear_runs(pg_url, FLOW, STAGES).max_attempts == 1


@pytest.mark.parametrize("mode", ["session", "connection"])
def test_a_process_that_dies_after_its_commit_is_recovered_and_runs_once(
    tx_app: Any, host: sa.Engine, workers: Workers, pg_url: str, env: dict[str, str], mode: str
) -> None:
    workers.start(TARGET, threads=2).wait_started()
    fault = {"FLOWKIT_FAULT": "submit-after-commit"} if mode == "session" else {}
    done = subprocess.run(
        [sys.executable, str(HERE / "tx_flows.py"), mode],
        env={**os.environ, **env, **fault},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The Session's process dies in its after_commit hook, before the publish (137).
    assert done.returncode == (137 if mode == "session" else 0), done.stdout + done.stderr
    assert ("committed" in done.stdout) is (mode == "connection")
    _, order_id, run_id = done.stdout.split("\n")[0].split()
    assert query(pg_url, "SELECT run_id FROM shop_orders") == [(run_id,)]  # committed
    assert wait_for_runs(pg_url, FLOW, 1, timeout=40) == {"succeeded": 1}
    assert scalar(pg_url, "SELECT output FROM flowkit_runs") == int(order_id) * 10 + 1
    audit = check_linear_runs(pg_url, FLOW, STAGES)
    assert audit.runs == 1 and audit.rows == 2 and audit.max_attempts == 1


def test_16_threads_placing_orders_make_one_run_per_committed_order(
    tx_app: Any, host: sa.Engine, workers: Workers, pg_url: str
) -> None:
    threads, per_thread = 16, 20
    for _ in range(2):
        workers.start(TARGET, threads=4)
    for w in workers.all:
        w.wait_started()
    errors: list[BaseException] = []
    placed: list[tuple[int, str]] = []
    lock = threading.Lock()
    go = threading.Barrier(threads)

    def client(n: int) -> None:
        try:
            go.wait(30)
            for i in range(per_thread):
                rollback = i % 4 == 3
                if n % 2:
                    with Session(host) as session:
                        order_id, run_id = tx_flows.place(session, thread=n)
                        again = tx_flows.orders.submit(
                            {"order_id": order_id}, key=f"order-{order_id}", connection=session
                        )
                        assert again.id == run_id and not again.created
                        (session.rollback if rollback else session.commit)()
                else:
                    with host.connect() as conn:
                        order_id, run_id = tx_flows.place(conn, thread=n)
                        (conn.rollback if rollback else conn.commit)()
                if not rollback:
                    with lock:
                        placed.append((order_id, run_id))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    pool = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in pool)
    committed = threads * per_thread * 3 // 4
    assert len(placed) == committed
    assert wait_for_runs(pg_url, FLOW, committed, timeout=60) == {"succeeded": committed}
    orders = query(pg_url, "SELECT id, run_id FROM shop_orders ORDER BY id")
    assert sorted(orders) == sorted(placed)
    by_key = dict(query(pg_url, "SELECT key, id FROM flowkit_runs"))
    assert by_key == {f"order-{order_id}": run_id for order_id, run_id in placed}
    outputs = dict(query(pg_url, "SELECT id, output FROM flowkit_runs"))
    assert all(outputs[run_id] == order_id * 10 + 1 for order_id, run_id in placed)
    audit = check_linear_runs(pg_url, FLOW, STAGES)
    assert audit.runs == committed and audit.rows == 2 * committed


def test_a_connection_to_another_database_is_refused_naming_both(
    tx_app: Any, pg_url: str, pg_admin_url: str
) -> None:
    other = sa.create_engine(pg_admin_url)
    try:
        with other.connect() as conn, pytest.raises(flowkit.ConfigurationError) as got:
            tx_flows.orders.submit({"order_id": 1}, connection=conn)
    finally:
        other.dispose()
    message = str(got.value)
    ours, theirs = pg_url.rsplit("/", 1)[1], pg_admin_url.rsplit("/", 1)[1]
    assert f"database {theirs!r}" in message and f"database {ours!r}" in message
    assert scalar(pg_url, "SELECT count(*) FROM flowkit_runs") == 0


def test_the_same_database_reached_by_another_address_is_accepted(tx_app: Any, pg_url: str) -> None:
    other_url = pg_url.replace("127.0.0.1", "localhost")
    other = sa.create_engine(other_url)
    try:
        try:
            conn = other.connect()
        except sa.exc.OperationalError:
            pytest.skip("PostgreSQL is not reachable as localhost")
        with conn:
            run = tx_flows.orders.submit({"order_id": 1}, key="o1", connection=conn)
            conn.commit()
    finally:
        other.dispose()
    assert run.created
    assert scalar(pg_url, "SELECT count(*) FROM flowkit_runs") == 1
