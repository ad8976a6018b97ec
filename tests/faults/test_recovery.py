"""Recovery with workers only: the in-worker sweep resumes what was lost, and never floods.

Each scenario starts real ``flowkit worker`` processes (no scheduler; ``flowkit
recover`` only where the scenario is about it) on the flows of
:mod:`recovery_flows`, and prints its ``FAULTS`` line through the
:class:`~faultkit.Checker`:

12. every first message lost before any worker ran: the workers alone finish them;
13. a large healthy backlog: ``flowkit recover`` and the workers' sweeps add <1%;
14. a worker SIGKILLed mid-steps, its messages gone too: the steps resume within
    seconds, by its heartbeat, not after their one-hour lease.

``$FLOWKIT_FAULTS_BACKLOG_STEPS`` sets scenario 13's backlog (20,000; ``nox -s soak``: 100,000).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import faultkit
import pika
import pytest
from faultkit import Checker
from helpers import (  # noqa: F401 - fixtures
    Workers,
    bound_app,
    env_fixture,
    query,
    scalar,
    wait_until,
    workers_fixture,
)

from flowkit.runtime.publisher import Outgoing, RunRef

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TARGET = f"{faultkit.HERE / 'recovery_flows.py'}:app"
BACKLOG = int(os.environ.get("FLOWKIT_FAULTS_BACKLOG_STEPS", "20000"))


@pytest.fixture
def rk(pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The recovery flows' App on this test's database, the ledger made, queues purged."""
    import fault_flows
    import psycopg
    import recovery_flows

    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for ddl in fault_flows.LEDGER_DDL:
            conn.execute(ddl)
    with bound_app(recovery_flows.app, pg_url, rabbitmq_url):
        yield recovery_flows


@pytest.fixture
def checker(pg_url: str, request: pytest.FixtureRequest) -> Checker:
    return Checker(pg_url, request)


def ready_messages(url: str, queue: str) -> int:
    """RabbitMQ's count of ready messages in ``queue`` (a passive declare)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method = conn.channel().queue_declare(queue=queue, passive=True).method
        return int(method.message_count)
    finally:
        conn.close()


def purge(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(conn.channel().queue_purge(queue).method.message_count)
    finally:
        conn.close()


def republishes(url: str, flow: str) -> int:
    """Messages the sweep sent again (its marks on the steps)."""
    return int(
        scalar(
            url,
            "SELECT coalesce(sum(s.republishes), 0) FROM flowkit_steps s "
            "JOIN flowkit_runs r ON r.id = s.run_id WHERE r.flow = %s",
            (flow,),
        )
    )


def finished(url: str, flow: str) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM flowkit_runs WHERE flow = %s AND status IN "
            "('succeeded', 'failed', 'cancelled', 'timed_out')",
            (flow,),
        )
    )


def flowkit_recover(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flowkit", "recover", "--older-than", "0s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- 12. every first message lost, only workers ---------------------------------------
def test_workers_alone_resume_runs_whose_messages_were_all_lost(
    rk: Any, workers: Workers, pg_url: str, rabbitmq_url: str, checker: Checker
) -> None:
    n = 1000
    accepted = {rk.quick_runs.submit({"n": i}, key=f"lost-{i}").id for i in range(n)}
    assert rk.app.engine.publisher.flush(120)  # every message is on the broker, not in hand
    assert purge(rabbitmq_url, "rk.quick") == n  # every first message is gone
    began = time.monotonic()
    sup = workers.start(TARGET, "--processes", "2", threads=4, name="only-workers")
    sup.wait_started(count=2)
    checker.settle(accepted, ("rk",), 180)
    took = time.monotonic() - began
    rep = checker.report(
        "12. all first messages lost",
        accepted,
        flows=("rk",),
        recovery_s=took,
        note=f"only 2 worker processes, default sweep; {republishes(pg_url, 'rk')} re-published",
    )
    assert rep.succeeded == n
    # A copy may reach a step already claimed (ignored), never run it twice.
    checker.assert_clean(rep, max_reexecutions=0)
    assert republishes(pg_url, "rk") <= n * 1.01


# -- 13. a large healthy backlog ------------------------------------------------------
def store_backlog(app: Any, pg_url: str, n: int, work_ms: int) -> None:
    """``n`` runs of ``rk-slow`` stored in two statements and published in batches: what
    ``n`` submits leave behind, in seconds rather than minutes."""
    ids = "lpad(i::text, 31, '0')"
    query(
        pg_url,
        "INSERT INTO flowkit_runs (id, flow, key, status, input, created_at) "
        f"SELECT 'r' || {ids}, 'rk-slow', 'b-' || i, 'pending', "
        "jsonb_build_object('n', i, 'work_ms', %s), now() FROM generate_series(0, %s - 1) i",
        (work_ms, n),
    )
    query(
        pg_url,
        "INSERT INTO flowkit_steps (id, run_id, name, status, queue, attempts, input, "
        "created_at, scheduled_at) "
        f"SELECT 's' || {ids}, 'r' || {ids}, 'slow', 'queued', 'rk.slow', 0, "
        "jsonb_build_object('n', i, 'work_ms', %s), now(), now() "
        "FROM generate_series(0, %s - 1) i",
        (work_ms, n),
    )
    pad = "{:031d}"
    app.engine.publisher.publish_many(
        [
            (
                RunRef("rk-slow", "r" + pad.format(i), f"b-{i}"),
                Outgoing("s" + pad.format(i), "slow", "rk.slow"),
            )
            for i in range(n)
        ]
    )
    assert app.engine.publisher.flush(120)  # every message is on the broker, not in hand


def test_recover_and_the_sweeps_add_under_1pct_to_a_healthy_backlog(
    rk: Any, workers: Workers, pg_url: str, rabbitmq_url: str, checker: Checker
) -> None:
    n, work_ms, threads = BACKLOG, 60, 8
    store_backlog(rk.app, pg_url, n, work_ms)
    assert ready_messages(rabbitmq_url, "rk.slow") == n
    for _ in range(5):  # workers stopped: an operator's recover has no evidence to act on
        flowkit_recover(workers.env)
    after_recover = ready_messages(rabbitmq_url, "rk.slow")
    assert after_recover - n < n / 100, after_recover
    workers.env.update(FLOWKIT_SWEEP_SECONDS="1", FLOWKIT_HEARTBEAT_SECONDS="2")
    began = time.monotonic()
    workers.start(TARGET, "--processes", "2", threads=threads, name="backlog").wait_started(count=2)
    wait_until(lambda: finished(pg_url, "rk-slow") >= n // 10, n / 50, interval=0.5)
    assert flowkit_recover(workers.env) == "re-published 0 step(s)"  # busy: no evidence
    accepted = {r[0] for r in query(pg_url, "SELECT id FROM flowkit_runs WHERE flow = 'rk-slow'")}
    checker.settle(accepted, ("rk-slow",), max(600, n / 50))  # ~180 steps/s here
    took = time.monotonic() - began
    sent_again = republishes(pg_url, "rk-slow")
    rep = checker.report(
        f"13. backlog of {n} slow steps",
        accepted,
        flows=("rk-slow",),
        recovery_s=took,
        note=f"recover x5 +{after_recover - n} messages; sweeps re-published {sent_again} "
        f"over {took:.0f}s (sweep every 1s)",
    )
    assert rep.succeeded == n
    assert took > 60, "the backlog should last over a minute of sweeps"
    assert sent_again < n / 100
    checker.assert_clean(rep, max_reexecutions=0)


# -- 14. a worker SIGKILLed mid-steps -------------------------------------------------
def test_a_killed_workers_steps_resume_within_seconds_not_after_their_lease(
    rk: Any, workers: Workers, pg_url: str, rabbitmq_url: str, checker: Checker
) -> None:
    threads = 6
    # The defaults: a heartbeat every 2 s, so a worker is dead after 6 s without one
    # (3 beats), and a sweep every 5 s.
    victim = workers.start(TARGET, threads=threads, name="victim")
    victim.wait_started()
    works = [30_000] + [4_000] * (threads - 1)  # one 30-second step among them
    accepted = {
        rk.slow_runs.submit({"n": i, "work_ms": ms}, key=f"cut-{i}").id
        for i, ms in enumerate(works)
    }
    wait_until(lambda: running(pg_url) == threads, 30, interval=0.05, what="all running")
    victim.kill()
    killed = time.monotonic()
    # What RabbitMQ gave back is purged: the messages are gone, as a chained step's
    # or an acknowledged one's would be. Only the heartbeat can tell.
    purge(rabbitmq_url, "rk.slow")
    workers.start(TARGET, threads=threads, name="replacement").wait_started()
    started = time.monotonic()
    wait_until(lambda: executions(pg_url) == 2 * threads, 30, interval=0.1, what="resumed")
    resumed = time.monotonic()
    assert resumed - started < 15, f"resumed {resumed - started:.1f}s after the replacement"
    checker.settle(accepted, ("rk-slow",), 90)
    rep = checker.report(
        "14. SIGKILL, messages gone too",
        accepted,
        flows=("rk-slow",),
        recovery_s=resumed - killed,
        note=f"{threads} cut steps (one of 30s, no timeout) resumed "
        f"{resumed - started:.1f}s after the replacement started",
    )
    assert rep.succeeded == threads
    # Each cut step runs once more: the attempts the kill cut short.
    checker.assert_clean(rep, max_reexecutions=threads)
    assert rep.reexecutions == threads
    lost = scalar(pg_url, "SELECT count(*) FROM flowkit_attempts WHERE outcome = 'lost'")
    assert lost == threads


def running(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM flowkit_steps WHERE status = 'running'"))


def executions(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM fk_executions"))
