"""``submit_many`` on RabbitMQ + PostgreSQL with a real ``flowkit worker``: a thousand
runs in one call, each key one run, and a repeat of the call that creates nothing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
TARGET = f"{HERE / 'sm_flows.py'}:app"

import sm_flows  # noqa: E402
from helpers import (  # noqa: E402, F401 - fixtures
    Workers,
    bound_app,
    check_linear_runs,
    env_fixture,
    query,
    scalar,
    wait_for_runs,
    workers_fixture,
)


@pytest.fixture
def sm_app(pg_url: str, rabbitmq_url: str) -> Iterator[Any]:
    with bound_app(sm_flows.app, pg_url, rabbitmq_url) as app:
        yield app


def test_a_thousand_runs_in_one_call_complete_and_a_repeat_creates_nothing(
    sm_app: Any, workers: Workers, pg_url: str
) -> None:
    n = 1000
    keys = [f"order-{i}" for i in range(n)]
    workers.start(TARGET, threads=8).wait_started()
    runs = sm_flows.orders.submit_many([{"n": i} for i in range(n)], keys=keys)
    assert [r.created for r in runs] == [True] * n
    assert len({r.id for r in runs}) == n
    assert wait_for_runs(pg_url, "sm-orders", n, timeout=240) == {"succeeded": n}
    rows = query(pg_url, "SELECT key, id, output FROM flowkit_runs WHERE flow = 'sm-orders'")
    assert len(rows) == n
    assert {key: run_id for key, run_id, _ in rows} == {
        key: r.id for key, r in zip(keys, runs, strict=True)
    }
    assert all(out == 2 * int(key.split("-")[1]) + 1 for key, _, out in rows)
    audit = check_linear_runs(pg_url, "sm-orders", ["double", "inc"])
    assert audit.runs == n and audit.rows == 2 * n and audit.max_attempts == 1
    assert [r.result(timeout=30) for r in runs[:3]] == [1, 3, 5]

    again = sm_flows.orders.submit_many([{"n": i} for i in range(n)], keys=keys)
    assert not any(r.created for r in again)
    assert [r.id for r in again] == [r.id for r in runs]
    assert scalar(pg_url, "SELECT count(*) FROM flowkit_runs") == n
    assert scalar(pg_url, "SELECT count(*) FROM flowkit_steps") == 2 * n
