"""Fault scenario 1 behind PgBouncer: SIGKILL under load, with every worker process and
the submitting client reaching PostgreSQL through a PgBouncer in transaction mode.

The same flows, ledger and checker as tests/faults/test_faults.py's scenario 1, with
8 threads per worker process and ``FLOWKIT_DATABASE_POOLER=transaction``. The ledger
writes straight to PostgreSQL (``FLOWKIT_TEST_LEDGER_URL``) and the checker reads
straight from it, so neither depends on the pooler they judge. Besides the report's
0 lost / 0 stuck / 0 duplicated effects, no worker may log a prepared-statement or
startup-parameter error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fault_fixtures import checker_fixture, load_fixture  # noqa: F401 - fixtures
from faultkit import TARGET, Checker, Submitter, kill_under_load
from helpers import Workers, bound_app, dsn, scalar, wait_until, workers_fixture  # noqa: F401
from pgbouncer_kit import POOLER_ERRORS, Bouncer, pgbouncer_fixture  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(name="env")
def pooled_env(rabbitmq_url: str, pg_url: str, pgbouncer: Bouncer) -> dict[str, str]:
    """The worker processes' settings: the database through the PgBouncer."""
    return {
        "FLOWKIT_BROKER_URL": rabbitmq_url,
        "FLOWKIT_DATABASE_URL": pgbouncer.url(pg_url),
        "FLOWKIT_DATABASE_POOLER": "transaction",
        "FLOWKIT_TEST_LEDGER_URL": dsn(pg_url),
    }


@pytest.fixture(name="fk")
def pooled_fk(
    pg_url: str, rabbitmq_url: str, pgbouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The fault flows' App of this process (the submitter) through the PgBouncer too."""
    import fault_flows

    monkeypatch.setenv("FLOWKIT_DATABASE_POOLER", "transaction")
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pgbouncer.url(pg_url))
    monkeypatch.setenv("FLOWKIT_TEST_LEDGER_URL", dsn(pg_url))
    with psycopg.connect(dsn(pg_url)) as conn:
        for ddl in fault_flows.LEDGER_DDL:
            conn.execute(ddl)
    with bound_app(fault_flows.app, pgbouncer.url(pg_url), rabbitmq_url) as app:
        assert app.store.db.pooler == "transaction"
        yield fault_flows


def test_sigkill_under_load_behind_pgbouncer(
    fk: Any,
    workers: Workers,
    pg_url: str,
    pgbouncer: Bouncer,
    checker: Checker,
    load: Callable[..., Submitter],
) -> None:
    n, threads, kills = 1000, 8, 3
    rng = random.Random()
    sup = workers.start(TARGET, "--processes", "2", threads=threads, name="sup")
    sup.wait_started(count=2)
    sub = load(fk.ledger, n, work_ms=5)
    killed = kill_under_load(sup, pg_url, n, kills, rng)
    last_kill = time.monotonic()
    accepted = sub.finish()
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "1b. SIGKILL x3 behind PgBouncer",
        accepted,
        recovery_s=time.monotonic() - last_kill,
        note=f"{kills} kills, {threads} threads each, pool_mode=transaction",
        kills=killed,
    )
    assert rep.succeeded == n
    checker.assert_clean(rep, max_reexecutions=kills * threads)
    errors = workers.grep(POOLER_ERRORS)
    assert errors == [], errors[:5]
    assert "unsupported startup parameter" not in pgbouncer.log()
