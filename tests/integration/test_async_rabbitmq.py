"""``async def`` steps on RabbitMQ + PostgreSQL with real ``flowkit worker`` processes.

One worker process with 8 threads holds 100 awaiting steps at once (their messages
acknowledged at the hand-over, their rows ``running`` under the worker's id). A
SIGKILL then loses them all; the replacement's recovery sweep (the heartbeat rule)
resumes every one, and each completes once: ``aio_effects`` has one row per
idempotency key, hit once. A SIGTERM lets the coroutines in flight finish within
the shutdown timeout.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (  # noqa: F401 - fixtures
    HERE,
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

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'aio_flows.py'}:app"
FLOW = "it-aio"


@pytest.fixture
def aio_app(pg_url: str, rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import aio_flows

    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    aio_flows.create_ledger(pg_url)
    with bound_app(aio_flows.app, pg_url, rabbitmq_url) as app:
        yield app


def steps_in(url: str, name: str, status: str) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM flowkit_steps WHERE name = %s AND status = %s",
            (name, status),
        )
    )


def submit(app: Any, n: int, gate: Path) -> list[Any]:
    flow = app.flow(FLOW)
    return [flow.submit({"n": i, "gate": str(gate)}, key=f"aio-{i}") for i in range(n)]


def test_100_awaiting_steps_on_8_threads_survive_a_sigkill(
    aio_app: Any, workers: Workers, pg_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = workers.start(TARGET, threads=8, name="first")
    first.wait_started()
    submit(aio_app, 100, gate)

    # All 100 in flight at once on 8 threads: claimed, awaiting, messages acknowledged.
    wait_until(
        lambda: steps_in(pg_url, "wait_gate", "running") == 100,
        30,
        what="100 async steps running at once",
    )
    assert steps_in(pg_url, "wait_gate", "running") > 8
    ready = scalar(pg_url, "SELECT count(*) FROM flowkit_steps WHERE status = 'queued'")
    assert ready == 0

    first.kill()
    gate.touch()  # what the lost coroutines awaited is there now
    second = workers.start(TARGET, threads=8, name="second")
    second.wait_started()
    started = time.monotonic()
    counts = wait_for_runs(pg_url, FLOW, 100, timeout=60)
    took = time.monotonic() - started
    assert counts == {"succeeded": 100}, counts

    # Resumed by the heartbeat rule (stale after 3 beats of 2 s, a sweep every 5 s).
    assert took < 15, f"the replacement finished the lost steps {took:.1f}s after it started"
    audit = check_linear_runs(pg_url, FLOW, ["wait_gate", "note"])
    assert audit.runs == 100
    # Each step completed once: one effect per idempotency key, hit once.
    effects = query(pg_url, "SELECT count(*), max(hits), min(hits) FROM aio_effects")[0]
    assert tuple(effects) == (100, 1, 1)
    attempts = query(
        pg_url, "SELECT attempts, count(*) FROM flowkit_steps WHERE name = 'wait_gate' GROUP BY 1"
    )
    assert dict(attempts) == {2: 100}  # the lost attempt, then the one that completed
    print(f"\nresumed 100 lost async steps {took:.1f}s after the replacement started")


def test_sigterm_lets_the_coroutines_in_flight_finish(
    aio_app: Any, workers: Workers, pg_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    # Only the async step's queue: its successors wait for another worker.
    worker = workers.start(TARGET, "--queues", "itaio.wait", threads=4, shutdown_timeout=30)
    worker.wait_started()
    submit(aio_app, 20, gate)
    wait_until(
        lambda: steps_in(pg_url, "wait_gate", "running") == 20, 30, what="20 async steps running"
    )
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: "async step(s) in flight" in worker.output(),
        30,
        what="the stopping worker to wait for its async steps",
    )
    gate.touch()
    assert worker.proc.wait(40) == 0
    assert steps_in(pg_url, "wait_gate", "succeeded") == 20
    assert steps_in(pg_url, "note", "queued") == 20
    attempts = scalar(pg_url, "SELECT max(attempts) FROM flowkit_steps WHERE name = 'wait_gate'")
    assert attempts == 1
    effects = query(pg_url, "SELECT count(*), max(hits) FROM aio_effects")[0]
    assert tuple(effects) == (20, 1)


def test_coroutines_still_awaiting_at_the_shutdown_timeout_are_resumed_elsewhere(
    aio_app: Any, workers: Workers, pg_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = workers.start(TARGET, threads=4, shutdown_timeout=1, name="first")
    first.wait_started()
    submit(aio_app, 20, gate)
    wait_until(
        lambda: steps_in(pg_url, "wait_gate", "running") == 20, 30, what="20 async steps running"
    )
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0
    assert "20 async step(s) still running at the stop: left to the sweep" in first.output()
    assert steps_in(pg_url, "wait_gate", "running") == 20  # nothing recorded, nothing lost
    gate.touch()
    second = workers.start(TARGET, threads=4, name="second")
    second.wait_started()
    started = time.monotonic()
    # The stopped worker's row says so: the first pass of the replacement's sweep takes them.
    assert wait_for_runs(pg_url, FLOW, 20, timeout=60) == {"succeeded": 20}
    took = time.monotonic() - started
    assert took < 15, f"the replacement finished the left steps {took:.1f}s after it started"
    effects = query(pg_url, "SELECT count(*), max(hits) FROM aio_effects")[0]
    assert tuple(effects) == (20, 1)
