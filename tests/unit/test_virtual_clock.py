"""Skipping time in tests: flowkit.testing.VirtualClock fires delays, timeouts and deadlines."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import flowkit
from flowkit import _clock
from flowkit.cli.loader import load
from flowkit.testing import VirtualClock, drain, embedded, run_to_completion, wait_for_status

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
calls: Counter[str] = Counter()
_lock = threading.Lock()


class Expense(BaseModel):
    amount: int


class Approval(BaseModel):
    approver: str
    approved: bool


# The docs' example (docs/testing.md): a 30-second approval window.
expenses = flowkit.Workflow("vc-expenses")


@expenses.step
def submit_expense(e: Expense) -> Expense:
    return e


@expenses.step(after=submit_expense, wait_for="approval", timeout="30s")
def review(e: Expense, approval: Approval | flowkit.TimedOut) -> str:
    if isinstance(approval, flowkit.TimedOut):
        return "auto-rejected"
    return "approved" if approval.approved else "rejected"


reminders = flowkit.Workflow("vc-reminders")


@reminders.step(delay="3d")
def remind(n: int) -> int:
    return n + 1


bounded = flowkit.Workflow("vc-bounded", timeout="1h")


@bounded.step(wait_for="never")
def wait_forever(n: int, never: Approval) -> str:
    return "answered"


@bounded.step(after=wait_forever)
def after_wait(s: str) -> str:
    return s


flaky = flowkit.Workflow("vc-flaky")


@flaky.step(retries=1, min_backoff="20ms")
def fails_once(n: int, ctx: flowkit.Context) -> int:
    with _lock:
        calls["flaky"] += 1
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return n


app = flowkit.App("vclock", flows=[expenses, reminders, bounded, flaky])


@pytest.fixture
def clock(flowkit_clock: VirtualClock) -> VirtualClock:
    return flowkit_clock


@pytest.fixture
def embedded_app(flowkit_embedded: Any, clock: VirtualClock) -> Iterator[flowkit.App]:
    calls.clear()
    yield flowkit_embedded(app, clock=clock)


def test_a_30s_approval_timeout_is_tested_without_waiting_30s(
    embedded_app: flowkit.App, clock: VirtualClock
) -> None:
    run = expenses.submit({"amount": 120})
    wait_for_status(run, "waiting")
    clock.advance(seconds=29)
    assert run.status() is flowkit.RunStatus.WAITING  # not yet: one second to go
    assert {s.name: s.status.value for s in run.steps()}["review"] == "waiting"
    assert len(clock.pending) == 1  # the wait's timeout, held by the clock
    clock.advance(seconds=1)
    assert run_to_completion(run) == "auto-rejected"
    assert clock.pending == []


def test_a_signal_before_the_timeout_still_wins(
    embedded_app: flowkit.App, clock: VirtualClock
) -> None:
    run = expenses.submit({"amount": 5})
    wait_for_status(run, "waiting")
    clock.advance(seconds=20)
    run.signal("approval", {"approver": "ana", "approved": True})
    assert run_to_completion(run) == "approved"
    clock.advance(seconds=20)  # the wait's timer goes off for nothing: the step ran
    assert run.status() is flowkit.RunStatus.SUCCEEDED and run.result() == "approved"


def test_a_delayed_step_runs_when_the_clock_reaches_it(
    embedded_app: flowkit.App, clock: VirtualClock
) -> None:
    run = reminders.submit(1)
    # the publish after the commit handed the 3-day timer to the clock (at most a 10-minute hop)
    assert [s.status.value for s in run.steps()] == ["queued"]
    assert len(clock.pending) == 1
    clock.advance(days=2, hours=23)
    assert [s.status.value for s in run.steps()] == ["queued"]  # hopped, not due yet
    clock.advance(hours=1)
    assert run_to_completion(run) == 2
    (step,) = run.steps()
    assert step.started_at is not None and step.started_at >= run.info().created_at + timedelta(
        days=3
    )


def test_a_run_deadline_passes_when_the_clock_says_so(
    embedded_app: flowkit.App, clock: VirtualClock
) -> None:
    run = bounded.submit(1)
    wait_for_status(run, "waiting")
    clock.advance(minutes=59)
    assert run.status() is flowkit.RunStatus.WAITING
    clock.advance(minutes=1)
    assert run.status() is flowkit.RunStatus.TIMED_OUT  # decided before advance returned
    assert {s.name: s.status.value for s in run.steps()} == {"wait_forever": "cancelled"}


def test_short_timers_still_go_off_with_the_wall_clock(
    embedded_app: flowkit.App, clock: VirtualClock
) -> None:
    run = flaky.submit(7)
    drain(embedded_app)  # waits for the 20ms backoff the clock holds, as for the broker's
    assert run.result(timeout=0) == 7
    assert calls["flaky"] == 2


def test_the_clock_only_moves_forward_and_is_put_back(tmp_path: Path) -> None:
    clock = VirtualClock()
    with pytest.raises(flowkit.ConfigurationError, match="only moves forward"):
        clock.advance(seconds=-1)
    with embedded(app, tmp_path, clock=clock):
        assert _clock.current() is clock
        ahead = clock.advance(hours=5)
        assert _clock.utcnow() >= ahead and clock.ahead == timedelta(hours=5)
    assert _clock.current() is not clock
    assert abs(_clock.utcnow() - datetime.now(timezone.utc)) < timedelta(minutes=1)


def test_advance_says_so_when_no_worker_handles_its_timers(tmp_path: Path) -> None:
    clock = VirtualClock()
    with embedded(app, tmp_path, clock=clock) as a:
        a.configure(embedded_worker=False)
        run = reminders.submit(1)
        with pytest.raises(flowkit.ResultTimeout, match=r"did not handle them within 0\.2s"):
            clock.advance(days=3, timeout=0.2)
        a.start_worker()
        assert run_to_completion(run) == 2


def test_the_approvals_example_auto_rejects_after_24_hours(
    flowkit_embedded: Any, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPROVALS_SERVICES_DB", str(tmp_path / "services.db"))
    target = load(f"{EXAMPLES / 'approvals' / 'app.py'}:expense_approval")
    expense_approval = target.flows[0]
    flowkit_embedded(expense_approval, clock=clock)
    run = expense_approval.submit(
        {
            "expense_id": "exp-1",
            "employee": "ana@example.com",
            "department": "sales",
            "lines": [{"description": "Train", "category": "travel", "amount_cents": 8450}],
        }
    )
    wait_for_status(run, "waiting")  # check_budget retried its flaky call in real time
    clock.advance(hours=23, minutes=59)
    assert run.status() is flowkit.RunStatus.WAITING
    clock.advance(minutes=1)
    rejection = run_to_completion(run)
    assert rejection["comment"] == "no decision within 24h" and rejection["approver"] == ""
    assert run.info().stop_reason == "auto-rejected: no decision within 24h"


def test_a_timer_sent_after_the_clock_moved_fires_by_its_row() -> None:
    # The race a test can hit: the wait's row is committed (due in 30 s), the test
    # advances 30 s, and only then is the timer message sent. It fires by its row.
    from flowkit.runtime.brokers import MemoryBroker
    from flowkit.runtime.publisher import Outgoing, RunRef, step_message

    clock = VirtualClock()
    previous = _clock.install(clock)
    try:
        due = clock.now() + timedelta(seconds=30)
        timer = Outgoing("s1", "review", "q", 30_000, due)
        clock.advance(seconds=30)
        assert timer.delay_now() == 0
        message = step_message(RunRef("f", "r1", None, None, None), timer)
        assert message.options[_clock.DUE_OPTION] == int(due.timestamp() * 1000)
        later = Outgoing("s2", "review", "q", 30_000, clock.now() + timedelta(seconds=5))
        broker = MemoryBroker()
        broker.declare_queue("q")
        sent = step_message(RunRef("f", "r1", None, None, None), later)
        broker.enqueue(sent, delay=later.delay_now())
        (when,) = clock.pending
        assert when == datetime.fromtimestamp(sent.options[_clock.DUE_OPTION] / 1000, timezone.utc)
    finally:
        _clock.install(previous)
