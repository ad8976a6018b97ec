"""Chained execution with a real `flowkit worker` on RabbitMQ + PostgreSQL: one statement per
step boundary (the PostgreSQL fast path), a hop for a queue the worker does not serve, and
`--no-chain`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import chain_flows  # noqa: E402
from fk_procs import Procs  # noqa: E402

TARGET = f"{HERE / 'chain_flows.py'}:app"


@pytest.fixture
def chained(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[tuple[flowkit.App, Procs]]:
    env = {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}
    app = chain_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - schema first
    procs = Procs(env, tmp_path)
    try:
        yield app, procs
    finally:
        procs.stop()
        app.close()


def _messages(app: flowkit.App, run: flowkit.Run) -> list[str | None]:
    """The message each step of the run was claimed by, in flow order."""
    return [app.store.step_row(s.id).claimed_by for s in run.steps()]  # type: ignore[union-attr]


def test_a_worker_serving_every_queue_chains_the_whole_pipeline(chained: Any) -> None:
    app, procs = chained
    procs.start("worker", TARGET, "--threads", "4")
    runs = [chain_flows.pipeline.submit(i) for i in range(20)]
    for i, run in enumerate(runs):
        assert run.result(timeout=60) == i + 4
        steps = run.steps()
        assert [(s.name, s.status.value, s.attempts) for s in steps] == [
            (f"c{k}", "succeeded", 1) for k in range(4)
        ]
        assert len(set(_messages(app, run))) == 1  # one message ran all four


def test_queues_it_does_not_serve_and_no_chain_hop_through_the_broker(chained: Any) -> None:
    app, procs = chained
    procs.start("worker", TARGET, "--threads", "2", "--queues", "chain.c0", "chain.c1")
    procs.start(
        "worker", TARGET, "--threads", "2", "--queues", "chain.c2", "chain.c3", "--no-chain"
    )
    runs = [chain_flows.pipeline.submit(i) for i in range(10)]
    for i, run in enumerate(runs):
        assert run.result(timeout=60) == i + 4
        c0, c1, c2, c3 = _messages(app, run)
        assert c0 == c1  # chained in the first worker
        assert len({c1, c2, c3}) == 3  # a hop to the second worker, then --no-chain
