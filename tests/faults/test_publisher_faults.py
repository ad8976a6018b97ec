"""Fault scenario 16: a worker killed between a batch written and its settlement.

Successors are handed to the worker's publisher thread, which writes a batch in
publisher-confirm mode and then waits for its confirms (``runtime/sender.py``). The
``before-confirm`` fault hook kills the process after the N-th batch is written and before
its confirms are awaited: RabbitMQ may have routed some of the batch and never got the rest
(what the kernel had not sent yet), so successors whose rows are committed may have no
message. The step that made each of them may already be acknowledged
(the publish returned at once), so nothing is redelivered for it: its row is
recovered by a redelivery that finds it (``StepRunner.not_claimed``) or by the
in-worker sweep of the worker started in its place (``docs/reliability.md``).
Every run must end: 0 lost, 0 stuck, 0 duplicated effects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fault_fixtures import checker_fixture, fk_fixture, load_fixture  # noqa: F401 - fixtures
from faultkit import TARGET, Checker, Submitter
from helpers import Workers, env_fixture, scalar, workers_fixture  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_kill_between_a_written_batch_and_its_settlement_under_load(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads, nth = 300, 4, 25
    # --no-chain: every successor is a message through the publisher thread (a chained
    # one would not be published at all).
    workers.env["FLOWKIT_FAULT"] = f"before-confirm@{nth}"
    try:
        dying = workers.start(TARGET, "--no-chain", threads=threads, name="dying")
    finally:
        workers.env.pop("FLOWKIT_FAULT")
    dying.wait_started()
    sub = load(fk.ledger, n, work_ms=5, every=0.005)
    assert dying.proc.wait(120) == 137, dying.output()[-2000:]
    died = time.monotonic()
    workers.start(TARGET, "--no-chain", threads=threads, name="clean").wait_started()
    accepted = sub.finish(240)
    checker.settle(accepted, ("fk",), 180)
    swept = int(scalar(pg_url, "SELECT count(*) FROM flowkit_steps WHERE republishes > 0"))
    redelivered = len(workers.grep(r"re-publishing \d+ successor"))
    rep = checker.report(
        "16. kill at before-confirm",
        accepted,
        recovery_s=time.monotonic() - died,
        note=(
            f"batch {nth} written, not confirmed; {swept} step(s) re-published by the sweep, "
            f"{redelivered} redelivery re-publish(es)"
        ),
    )
    assert rep.succeeded == n
    # Only the steps running in the killed process run again (at most `threads`);
    # a lost successor never ran, so it does not count.
    checker.assert_clean(rep, max_reexecutions=threads)
