"""Durable control on RabbitMQ + PostgreSQL with real `flowkit worker` processes."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flowkit
from flowkit.scheduling import Scheduler

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import ctl_flows  # noqa: E402
from fk_procs import Procs, wait_until  # noqa: E402

TARGET = f"{HERE / 'ctl_flows.py'}:app"


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def ledger(url: str, key: str) -> int:
    with psycopg.connect(_dsn(url)) as c:
        return int(
            c.execute("SELECT count(*) FROM ctl_ledger WHERE key = %s", (key,)).fetchone()[0]
        )


@pytest.fixture
def ctl(pg_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[tuple[flowkit.App, Procs]]:
    env = {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}
    os.environ.update(env)
    with psycopg.connect(_dsn(pg_url), autocommit=True) as c:
        c.execute("CREATE TABLE ctl_ledger (id serial primary key, key text)")
    app = ctl_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - schema first
    procs = Procs(env, tmp_path)
    try:
        yield app, procs
    finally:
        procs.stop()
        app.close()
        for k in env:
            os.environ.pop(k, None)


def test_signals_before_during_and_after_the_wait(ctl: Any, pg_url: str) -> None:
    _app, procs = ctl
    early = ctl_flows.approvals.submit({"amount": 1})
    early.signal("approval", {"approver": "early", "ok": True})  # before any worker runs
    procs.start("worker", TARGET, "--threads", "4")
    assert early.result(timeout=60) == "early:True"
    during = ctl_flows.approvals.submit({"amount": 2})
    wait_until(lambda: during.status() is flowkit.RunStatus.WAITING, 60, "the wait")
    assert during.signal("approval", {"approver": "ana", "ok": False}) is True
    assert during.result(timeout=60) == "ana:False"
    with pytest.raises(flowkit.SignalRejected, match="is succeeded"):
        during.signal("approval", {"approver": "late", "ok": True})
    assert ledger(pg_url, f"{during.id}:decide") == 1


def test_a_wait_that_times_out(ctl: Any) -> None:
    _, procs = ctl
    procs.start("worker", TARGET, "--threads", "2")
    run = ctl_flows.impatient.submit({"amount": 1})
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=60)
    assert info.value.error_type == "StepTimeout"


def test_a_run_deadline(ctl: Any) -> None:
    _, procs = ctl
    procs.start("worker", TARGET, "--threads", "2")
    run = ctl_flows.deadline.submit({"amount": 1})
    assert run.wait(timeout=60) is flowkit.RunStatus.TIMED_OUT
    wait_until(
        lambda: {s.status.value for s in run.steps()} == {"cancelled"}, 30, "the step to stop"
    )


def test_cancel_a_running_fan_out(ctl: Any, pg_url: str) -> None:
    _, procs = ctl
    procs.start("worker", TARGET, "--threads", "8")
    run = ctl_flows.fan.submit(20)
    wait_until(
        lambda: any(s.name == "item" and s.status.value == "running" for s in run.steps()),
        60,
        "items to run",
    )
    assert run.cancel() is True
    assert run.wait(timeout=30) is flowkit.RunStatus.CANCELLED
    wait_until(
        lambda: all(s.status.value == "cancelled" for s in run.steps() if s.name != "split"),
        60,
        "every item to be cancelled",
    )
    assert ledger(pg_url, f"{run.id}:total") == 0


def test_redrive_from_the_failed_step_does_not_rerun_earlier_steps(ctl: Any, pg_url: str) -> None:
    _, procs = ctl
    procs.start("worker", TARGET, "--threads", "4")
    run = ctl_flows.approvals.submit({"amount": 3, "fail": True})
    run.signal("approval", {"approver": "bob", "ok": True})
    with pytest.raises(flowkit.RunFailed, match="the ledger refused it"):
        run.result(timeout=60)
    assert run.retry() == ["decide"]
    wait_until(lambda: run.status() is flowkit.RunStatus.WAITING, 60, "the wait again")
    run.signal("approval", {"approver": "fixed", "ok": True})
    assert run.result(timeout=60) == "fixed:True"
    assert ledger(pg_url, f"{run.id}:prepare") == 1
    assert ledger(pg_url, f"{run.id}:decide") == 2


def test_two_schedulers_start_each_tick_once(ctl: Any, pg_url: str, rabbitmq_url: str) -> None:
    app, procs = ctl
    procs.start("worker", TARGET, "--threads", "4")
    other = flowkit.App("ctl", flows=[])  # a second process's view: its own pool
    other.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    ticks = [datetime(2026, 1, 1, 0, m, tzinfo=timezone.utc) for m in range(10)]
    schedulers = [Scheduler(app, sweep_every=0), Scheduler(app, sweep_every=0)]
    barrier = threading.Barrier(2)

    def fire(s: Scheduler) -> None:
        barrier.wait()
        for t in ticks:
            s.fire(ctl_flows.ticking, t)

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    created = [c for s in schedulers for *_, c in s.started if c]
    assert len(created) == 10
    runs = app.runs(flow="ctl-ticking", limit=100)
    assert len(runs) == 10
    for r in runs:
        assert app.run(r.id).wait(timeout=60) is flowkit.RunStatus.SUCCEEDED
        assert ledger(pg_url, f"{r.id}:tick") == 1


def test_two_scheduler_processes_fire_the_next_minute_once(ctl: Any, pg_url: str) -> None:
    app, procs = ctl
    procs.start("worker", TARGET, "--threads", "2")
    procs.start("scheduler", TARGET, "--sweep-every", "0")
    procs.start("scheduler", TARGET, "--sweep-every", "0")
    wait_until(lambda: bool(app.runs(flow="ctl-ticking")), 75, "the next minute's tick")
    first = app.runs(flow="ctl-ticking")[-1]
    assert app.run(first.id).wait(timeout=30) is flowkit.RunStatus.SUCCEEDED
    logs_done = lambda: procs.logs().count(first.key or "?") >= 0  # noqa: E731
    wait_until(logs_done, 5, "scheduler logs")
    same_tick = [r for r in app.runs(flow="ctl-ticking", limit=100) if r.key == first.key]
    assert len(same_tick) == 1
    assert ledger(pg_url, f"{first.id}:tick") == 1


def test_a_crash_between_commit_and_publish_is_recovered_by_the_sweep(
    ctl: Any, pg_url: str, rabbitmq_url: str
) -> None:
    app, procs = ctl
    # A submitting process dies right after storing the run, before publishing it.
    crashed = procs.start(
        "submit",
        TARGET,
        "--flow",
        "ctl-chain",
        "--data",
        "5",
        env={"FLOWKIT_FAULT": "submit-after-commit"},
    )
    assert crashed.wait(60) == 137
    (info,) = app.runs(flow="ctl-chain")
    procs.start("worker", TARGET, "--threads", "4")
    run = app.run(info.id)
    assert run.status() is flowkit.RunStatus.PENDING  # nothing was published
    swept = procs.start("recover", "--force", "--older-than", "0s")
    assert swept.wait(60) == 0
    assert run.result(timeout=60) == 11
    for step in ("one", "two", "three"):
        assert ledger(pg_url, f"{run.id}:{step}") == 1


@pytest.mark.parametrize(
    ("flags", "second"),
    [
        (["--no-chain"], "queued"),  # step two inserted queued, its message not published
        ([], "running"),  # chained: step two claimed by step one's message, in its thread
    ],
)
def test_a_worker_crash_after_commit_is_resumed_by_the_redelivery(
    ctl: Any, pg_url: str, flags: list[str], second: str
) -> None:
    _app, procs = ctl
    env = {"FLOWKIT_FAULT": "after-commit"}
    dying = procs.start("worker", TARGET, "--threads", "1", *flags, env=env)
    run = ctl_flows.pipeline.submit(5)
    assert dying.wait(60) == 137  # died after recording step one, before publishing two
    assert [s.status.value for s in run.steps()] == ["succeeded", second]
    procs.start("worker", TARGET, "--threads", "2")
    assert run.result(timeout=60) == 11
    for step in ("one", "two", "three"):
        assert ledger(pg_url, f"{run.id}:{step}") == 1
