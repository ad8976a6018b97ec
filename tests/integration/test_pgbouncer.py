"""Workers behind PgBouncer in transaction mode: a 1,000-item fan-out through it, and
``LISTEN`` straight to PostgreSQL (``FLOWKIT_LISTEN_URL``) beside a pooled store.

Two ``flowkit worker`` processes of 8 threads each, and the submitting App of this
test, reach PostgreSQL only through a PgBouncer of the test's own
(:mod:`pgbouncer_kit`) with ``FLOWKIT_DATABASE_POOLER=transaction``; the schema is
created through it too. Every item runs, the join runs once, no worker logs a
prepared-statement or startup-parameter error, and PostgreSQL never sees more
server connections than the PgBouncer pool. The ledger of :mod:`wf_flows` writes
straight to PostgreSQL (``FLOWKIT_TEST_LEDGER_URL``), so it counts independently.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import wf_flows
from helpers import HERE, Workers, bound_app, dsn, scalar, wait_until
from pgbouncer_kit import POOLER_ERRORS, Bouncer, pgbouncer_fixture  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'wf_flows.py'}:app"
LEDGER = "ledger"  # the ledger's application_name: not a flowkit connection


class ServerConnections(threading.Thread):
    """Samples how many connections PostgreSQL has to a database, besides the ledger's,
    and how many client connections PgBouncer has to it."""

    def __init__(self, url: str, bouncer: Bouncer) -> None:
        super().__init__(name="server-connections", daemon=True)
        self.url, self.bouncer, self.halt = url, bouncer, threading.Event()
        self.most = self.most_clients = 0
        self.start()

    def run(self) -> None:
        with (
            contextlib.suppress(psycopg.OperationalError),  # the database dropped at teardown
            psycopg.connect(dsn(self.url), autocommit=True, application_name=LEDGER) as c,
        ):
            while not self.halt.wait(0.1):  # a sampling period, not a synchronisation
                n = c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name <> %s",
                    (LEDGER,),
                ).fetchone()
                self.most = max(self.most, int(n[0]) if n else 0)
                clients = self.bouncer.clients(self.url.rsplit("/", 1)[1])
                self.most_clients = max(self.most_clients, clients)

    def stop(self) -> int:
        self.halt.set()
        self.join(10)
        return self.most


@pytest.fixture
def pooled(
    pg_url: str,
    rabbitmq_url: str,
    pgbouncer: Bouncer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, Workers, str]]:
    """The fan-out App (this process) and worker processes, all through the PgBouncer."""
    through = pgbouncer.url(pg_url)
    wf_flows.create_ledger(pg_url)
    ledger = f"{dsn(pg_url)}?application_name={LEDGER}"
    env = {
        "FLOWKIT_BROKER_URL": rabbitmq_url,
        "FLOWKIT_DATABASE_URL": through,
        "FLOWKIT_DATABASE_POOLER": "transaction",
        "FLOWKIT_TEST_LEDGER_URL": ledger,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    workers = Workers(env, log_dir)
    with bound_app(wf_flows.app, through, rabbitmq_url) as app:  # the schema, through it
        try:
            yield app, workers, through
        finally:
            workers.stop_all()


def test_a_1000_item_fan_out_through_pgbouncer(
    pooled: tuple[Any, Workers, str], pg_url: str, pgbouncer: Bouncer
) -> None:
    app, workers, _ = pooled
    assert app.store.db.pooler == "transaction"
    sampler = ServerConnections(pg_url, pgbouncer)
    try:
        sup = workers.start(TARGET, "--processes", "2", threads=8, name="pooled")
        sup.wait_started(count=2)
        run = wf_flows.matching.submit({"lenders": 1000})
        ranking = run.result(timeout=180)  # Run.wait polls: no LISTEN through the pooler
    finally:
        most = sampler.stop()
    assert ranking.count == 1000
    assert app.finishes.listener is None
    items = scalar(
        pg_url,
        "SELECT count(*) FROM flowkit_steps WHERE run_id = %s AND name = 'match' "
        "AND status = 'succeeded'",
        (run.id,),
    )
    assert items == 1000
    assert scalar(pg_url, "SELECT count(*) FROM it_effects") == 1002  # prepare, items, finalize
    assert (
        scalar(pg_url, "SELECT count(*) FROM it_executions WHERE key LIKE %s", ("%:finalize",)) == 1
    )
    errors = workers.grep(POOLER_ERRORS)
    assert errors == [], errors[:5]
    assert "unsupported startup parameter" not in pgbouncer.log()
    # PgBouncer's pool is the ceiling on what PostgreSQL sees from 2 x 8 threads.
    assert 0 < most <= pgbouncer.pool_size, most
    # docs/operations.md: at most 2 x (threads + 2) client connections per process behind
    # the pooler (one engine, no claims engine, no LISTEN); this process's App too.
    ceiling = 2 * 2 * (8 + 2) + 2 * (app.threads + 2)
    assert 0 < sampler.most_clients <= ceiling, (sampler.most_clients, ceiling)
    print(
        f"\n1,000-item fan-out through PgBouncer: at most {sampler.most_clients} client "
        f"connections (ceiling {ceiling}), {most} server connections (pool {pgbouncer.pool_size})"
    )


def test_listen_goes_straight_to_postgresql_when_a_listen_url_is_given(
    pg_url: str, pgbouncer: Bouncer
) -> None:
    """A pooled store's run ends through PgBouncer; the direct listener hears of it."""
    from flowkit._ids import new_id
    from flowkit.run import Finishes
    from flowkit.store import NewStep, Outcome, Store
    from flowkit.store.notify import RunListener
    from flowkit.store.rows import RunEnd, Source

    store = Store.open(pgbouncer.url(pg_url), pool_size=2, pooler="transaction")
    heard: queue.Queue[str] = queue.Queue()
    try:
        assert Finishes().listen(store) is None  # without a listen URL: polling
        store.db.listen_url = pg_url
        listener = RunListener(store.db, heard.put, lambda: None).start()
        try:
            wait_until(lambda: listener.live, 30, interval=0.02, what="LISTEN")
            where = scalar(
                pg_url,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid = %s AND application_name = 'flowkit listen'",
                (listener.backend_pid,),
            )
            assert where == 1  # a direct connection, named, not one of PgBouncer's
            step = NewStep(id=new_id(), name="a", queue="q", input={})
            run_id = store.runs.create(
                run_id=new_id(), flow="f", key=None, input={}, first=[step]
            ).run_id
            assert store.runs.claim(step.id, "m", lease_ms=9000, starts_run=True) is not None
            end = RunEnd(sinks=(Source("a", each=False),))
            assert store.runs.complete(step.id, "m", run_id, Outcome(output=1, end=end))
            assert heard.get(timeout=30) == run_id
        finally:
            listener.close()
    finally:
        store.dispose()
