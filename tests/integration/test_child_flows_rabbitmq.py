"""Child flows on RabbitMQ + PostgreSQL with two real ``flowkit worker`` processes.

1. 100 parent runs x 5 child runs each, one worker SIGKILLed mid-way (and replaced):
   every child run exists once (counted by parent), every parent succeeded and its
   join recorded 5 typed results once (the ledger of ``cf_flows``).
2. Many parents whose children wait for a signal: their call steps are ``waiting``
   rows while the workers' threads stay free (a run of another flow completes
   meanwhile); signalled, every parent finishes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import (  # noqa: F401 - fixtures
    HERE,
    Workers,
    bound_app,
    env_fixture,
    query,
    scalar,
    wait_for_runs,
    wait_until,
    workers_fixture,
)

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'cf_flows.py'}:app"
PARENTS = 100
CHILDREN = 5
WAITERS = 1000


@pytest.fixture
def cf(pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import cf_flows

    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    cf_flows.create_ledger(pg_url)
    with bound_app(cf_flows.app, pg_url, rabbitmq_url) as app:
        yield app


def _child_runs(url: str, flow: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM flowkit_runs WHERE flow = %s", (flow,)))


def test_parents_join_once_with_every_child_once_across_a_sigkill(
    cf: Any, workers: Workers, pg_url: str
) -> None:
    import cf_flows

    workers.env.update(FLOWKIT_HEARTBEAT_SECONDS="1", FLOWKIT_SWEEP_SECONDS="1")
    victim = workers.start(TARGET, threads=4, name="victim")
    workers.start(TARGET, threads=4, name="other")
    for w in workers.all:
        w.wait_started()
    batches = [cf_flows.Batch(parent=i, children=CHILDREN, work_ms=5) for i in range(PARENTS)]
    cf_flows.parent.submit_many(batches)
    wait_until(
        lambda: (
            int(
                scalar(
                    pg_url,
                    "SELECT count(*) FROM flowkit_runs WHERE flow = 'cf-child' "
                    "AND status = 'succeeded'",
                )
            )
            >= PARENTS
        ),
        60,
        what="a fifth of the child runs to finish",
    )
    victim.kill()  # mid-way: parents and children in every state
    at_kill = query(
        pg_url,
        "SELECT flow, count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM flowkit_runs "
        "GROUP BY flow ORDER BY flow",
    )
    workers.start(TARGET, threads=4, name="replacement").wait_started()
    counts = wait_for_runs(pg_url, "cf-parent", PARENTS, timeout=120)
    assert counts == {"succeeded": PARENTS}, counts

    # Every child run exists once: 5 per parent, one per item, all succeeded.
    per_parent = query(
        pg_url,
        "SELECT r.parent_run_id, count(*), count(DISTINCT s.item), "
        "count(*) FILTER (WHERE r.status = 'succeeded') FROM flowkit_runs r "
        "JOIN flowkit_steps s ON s.id = r.parent_step_id WHERE r.flow = 'cf-child' "
        "GROUP BY r.parent_run_id",
    )
    assert len(per_parent) == PARENTS
    assert {(int(n), int(d), int(ok)) for _, n, d, ok in per_parent} == {(5, 5, 5)}
    assert _child_runs(pg_url, "cf-child") == PARENTS * CHILDREN

    # Every parent joined once, with its 5 results in item order (the ledger).
    effects = query(pg_url, "SELECT n, items, hits FROM cf_join_effects")
    assert len(effects) == PARENTS
    assert {(n, items) for n, items, _ in effects} == {(5, json.dumps(list(range(5))))}
    reexecuted = sum(1 for *_, hits in effects if hits > 1)  # at least once: allowed
    joins = query(
        pg_url,
        "SELECT s.run_id, count(*) FROM flowkit_steps s JOIN flowkit_runs r ON r.id = s.run_id "
        "WHERE r.flow = 'cf-parent' AND s.name = 'join' AND s.status = 'succeeded' GROUP BY 1",
    )
    assert len(joins) == PARENTS and {int(n) for _, n in joins} == {1}
    executions = int(scalar(pg_url, "SELECT count(*) FROM cf_join_executions"))
    lost = scalar(pg_url, "SELECT count(*) FROM flowkit_attempts WHERE outcome = 'lost'")
    print(f"\nat the kill (flow, succeeded, runs): {at_kill}; attempts lost: {lost}")
    print(f"joins: {executions} executions for {PARENTS} parents, {reexecuted} re-executed")


def test_waiting_parents_hold_no_worker_thread(cf: Any, workers: Workers, pg_url: str) -> None:
    import cf_flows

    for name in ("a", "b"):
        workers.start(TARGET, threads=2, name=name)
    for w in workers.all:
        w.wait_started()
    cf_flows.waiter.submit_many([cf_flows.Item(parent=i, item=0) for i in range(WAITERS)])

    def all_waiting() -> bool:
        n = scalar(
            pg_url,
            "SELECT count(*) FROM flowkit_steps s JOIN flowkit_runs r ON r.id = s.run_id "
            "WHERE r.flow = 'cf-waiter' AND s.name = 'gate' AND s.status = 'waiting'",
        )
        return int(n) == WAITERS

    wait_until(all_waiting, 90, interval=0.25, what=f"{WAITERS} call steps waiting")
    # 4 worker threads, WAITERS parents waiting: a run of another flow still runs at once.
    assert cf_flows.quick.submit(1).result(timeout=30) == 2
    assert all_waiting()
    running = scalar(pg_url, "SELECT count(*) FROM flowkit_steps WHERE status = 'running'")
    assert int(running) == 0
    children = [r[0] for r in query(pg_url, "SELECT id FROM flowkit_runs WHERE flow = 'cf-gate'")]
    assert len(children) == WAITERS
    for child_id in children:
        cf.signal(child_id, "go", {"ok": True})
    counts = wait_for_runs(pg_url, "cf-waiter", WAITERS, timeout=120)
    assert counts == {"succeeded": WAITERS}, counts
