"""The fault suite's ``submit_many`` scenario: batches submitted while RabbitMQ stops.

A client submits 1,000 runs with ``submit_many`` in batches of 50, each run with its
key, while a ``flowkit worker`` runs them. Halfway, RabbitMQ's application is stopped
for 20 s (and started again whatever happens). A batch that raises ``BrokerError``
(refused before anything was stored, or stored and not all sent) or ``StoreError`` is
submitted again with the same keys until it goes through, as a careful client does:
the keys make a batch stored before the error the same runs, and the retry publishes
their entry steps still queued. At the end: 0 lost, 0 stuck, 0 duplicated effects.

Run it with the rest of the suite (``nox -s faults``), never beside other work on
the same RabbitMQ: it stops the broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import faultkit
import pytest
from fault_fixtures import checker_fixture, fk_fixture  # noqa: F401 - fixtures
from faultkit import TARGET, Checker
from helpers import (  # noqa: F401 - fixtures
    Workers,
    env_fixture,
    scalar,
    wait_until,
    workers_fixture,
)

import flowkit

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class BatchSubmitter(threading.Thread):
    """Submits ``n`` runs with ``submit_many`` in batches of ``size``, ``every`` seconds
    apart, retrying a batch that raised ``BrokerError`` or ``StoreError`` with its keys."""

    def __init__(self, flow: Any, n: int, *, size: int, every: float, work_ms: int = 5) -> None:
        super().__init__(name="batch-submitter", daemon=True)
        self.flow, self.n, self.size, self.every, self.work_ms = flow, n, size, every, work_ms
        self.accepted: dict[str, str] = {}  # key -> run id, as submit_many returned them
        self.refused = 0  # batches that raised (each submitted again with the same keys)
        self.known = 0  # runs a retried batch found stored by an earlier attempt
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self.start()

    def run(self) -> None:
        pause = threading.Event()
        try:
            for start in range(0, self.n, self.size):
                numbers = range(start, min(start + self.size, self.n))
                inputs = [{"n": i, "work_ms": self.work_ms} for i in numbers]
                keys = [f"batch-{i}" for i in numbers]
                while not self.halt.is_set():
                    try:
                        runs = self.flow.submit_many(inputs, keys=keys)
                    except (flowkit.BrokerError, flowkit.StoreError):
                        self.refused += 1
                        pause.wait(0.5)  # a client's back-off, not a synchronisation
                        continue
                    self.accepted.update({k: r.id for k, r in zip(keys, runs, strict=True)})
                    self.known += sum(not r.created for r in runs)
                    break
                pause.wait(self.every)  # pacing the load, not a synchronisation
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 240) -> set[str]:
        self.join(timeout)
        assert not self.is_alive(), f"submitting took more than {timeout:g}s"
        assert self.error is None, repr(self.error)
        assert len(self.accepted) == self.n
        return set(self.accepted.values())


@pytest.fixture
def batches() -> Iterator[list[BatchSubmitter]]:
    """The scenario's submitters; a failing test never leaves one submitting."""
    made: list[BatchSubmitter] = []
    yield made
    for s in made:
        s.halt.set()
        s.join(30)


def test_submit_many_in_batches_while_rabbitmq_stops_halfway(
    fk: Any,
    workers: Workers,
    pg_url: str,
    checker: Checker,
    batches: list[BatchSubmitter],
) -> None:
    n, size, threads = 1000, 50, 4
    workers.start(TARGET, threads=threads).wait_started()
    sub = BatchSubmitter(fk.ledger, n, size=size, every=0.5)
    batches.append(sub)
    wait_until(lambda: len(sub.accepted) >= n // 2, 120, interval=0.05, what="half the runs")
    with faultkit.rabbitmq_stopped():
        threading.Event().wait(20)  # the outage itself lasts 20 s (the fault, not a sync)
    back = time.monotonic()
    accepted = sub.finish()
    checker.settle(accepted, ("fk",), 240)
    rep = checker.report(
        "17. submit_many x50, RabbitMQ stopped",
        accepted,
        recovery_s=time.monotonic() - back,
        note=f"{sub.refused} batches refused, retried with their keys "
        f"({sub.known} runs found stored by an earlier try)",
    )
    assert rep.succeeded == n
    assert sub.refused > 0  # batches met the outage
    # Each key is one run, whatever the retries stored before their error.
    assert int(scalar(pg_url, "SELECT count(*) FROM flowkit_runs WHERE flow = 'fk'")) == n
    checker.assert_clean(rep, max_reexecutions=2 * threads)
