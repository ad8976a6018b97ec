"""Fault scenario 15: SIGKILL in the middle of chained steps, under load.

The fault flows' pipeline (a → b → c, three queues) runs on workers that serve every
queue, so each run's steps are chained: b and c run in the thread that ran a, claimed by
a's completion, with no message of their own. A process killed mid-chain leaves a
``running`` step whose only message is the unacknowledged one that started the chain;
RabbitMQ redelivers it when the connection drops, and the redelivery releases the step
(``docs/performance.md``, "Chained steps"). Every cut run must move again within 10 s
of the killed worker's restart.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from fault_fixtures import checker_fixture, fk_fixture, load_fixture  # noqa: F401 - fixtures
from faultkit import TARGET, Checker, Submitter, child_pids, finished
from helpers import (  # noqa: F401 - fixtures
    Workers,
    env_fixture,
    query,
    scalar,
    wait_until,
    workers_fixture,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _held_by(url: str, pid: int) -> dict[str, tuple[int, bool]]:
    """The running steps of worker process ``pid``: attempts, and whether chained (its
    message also completed an earlier step of the run)."""
    rows = query(
        url,
        "SELECT s.id, s.attempts, EXISTS (SELECT 1 FROM flowkit_steps p WHERE p.run_id = s.run_id "
        "AND p.claimed_by = s.claimed_by AND p.id <> s.id AND p.status = 'succeeded') "
        "FROM flowkit_steps s JOIN flowkit_workers w ON w.id = s.worker_id "
        "WHERE s.status = 'running' AND w.pid = %s",
        (pid,),
    )
    return {r[0]: (int(r[1]), bool(r[2])) for r in rows}


def _moved(url: str, cut: dict[str, tuple[int, bool]]) -> bool:
    rows = query(
        url, "SELECT id, status, attempts FROM flowkit_steps WHERE id = ANY(%s)", (list(cut),)
    )
    # Moved: finished, queued again, or running under a new attempt.
    return len(rows) == len(cut) and all(
        status != "running" or attempts > cut[sid][0] for sid, status, attempts in rows
    )


def test_sigkill_mid_chain_under_load(
    fk: Any, workers: Workers, pg_url: str, checker: Checker, load: Callable[..., Submitter]
) -> None:
    n, threads, kills = 600, 4, 3
    rng = random.Random()
    sup = workers.start(TARGET, "--processes", "2", threads=threads, name="sup")
    sup.wait_started(count=2)
    sub = load(fk.ledger, n, work_ms=20)
    killed, chained_cut, resumed_after = [], 0, []
    for k in range(kills):
        threshold = rng.randint(n * (2 * k + 1) // 8, n * (2 * k + 2) // 8)
        wait_until(lambda t=threshold: finished(pg_url) >= t, 120, interval=0.05)
        wait_until(lambda: len(child_pids(sup)) == 2, 60, what="two workers")
        victim = rng.choice(child_pids(sup))
        wait_until(lambda v=victim: bool(_held_by(pg_url, v)), 30, interval=0.005)
        os.kill(victim, signal.SIGKILL)
        cut = _held_by(pg_url, victim)
        chained_cut += sum(1 for _, chained in cut.values() if chained)
        killed.append(f"pid {victim} at {finished(pg_url)}/{n} ({len(cut)} running)")
        wait_until(lambda v=victim: v not in child_pids(sup) and len(child_pids(sup)) == 2, 60)
        restarted = time.monotonic()
        wait_until(lambda c=cut: _moved(pg_url, c), 30, interval=0.05, what="the cut runs")
        resumed_after.append(time.monotonic() - restarted)
    last_kill = time.monotonic()
    accepted = sub.finish()
    checker.settle(accepted, ("fk",), 180)
    rep = checker.report(
        "15. SIGKILL x3 mid-chain",
        accepted,
        recovery_s=time.monotonic() - last_kill,
        note=f"{chained_cut} chained steps cut; cut runs moved "
        f"{max(resumed_after):.1f}s after the restart at worst",
        kills=killed,
    )
    assert rep.succeeded == n
    assert chained_cut > 0, "no kill landed in a chain: the scenario tested nothing new"
    assert max(resumed_after) <= 10.0, resumed_after
    checker.assert_clean(rep, max_reexecutions=kills * threads)
