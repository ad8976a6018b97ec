"""Durable control on the embedded default: signals, timers, deadlines, cancel, schedules."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import BaseModel

import flowkit
from flowkit.scheduling import Scheduler, next_tick, parse_cron, tick_key
from flowkit.testing import drain, embedded, wait_for_status

calls: Counter[str] = Counter()
_lock = threading.Lock()
release = threading.Event()
working = threading.Event()


def hit(name: str) -> None:
    with _lock:
        calls[name] += 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    release.clear()
    working.clear()


class Expense(BaseModel):
    amount: int


class Approval(BaseModel):
    approver: str
    ok: bool


class Decision(BaseModel):
    amount: int
    approved: bool
    by: str


approvals = flowkit.Workflow("approvals")


@approvals.step
def submit_expense(e: Expense) -> Expense:
    hit("submit")
    return e


@approvals.step(after=submit_expense, wait_for="approval", timeout="30s")
def decide(e: Expense, approval: Approval, ctx: flowkit.Context) -> Decision:
    hit("decide")
    return Decision(amount=e.amount, approved=approval.ok, by=approval.approver)


@approvals.step(after=decide)
def book(d: Decision) -> Decision:
    hit("book")
    return d


quick = flowkit.Workflow("quick-timeout")


@quick.step(wait_for="nudge", timeout="200ms")
def must_hear(e: Expense, nudge: Approval) -> str:
    return "heard"


lenient = flowkit.Workflow("lenient-timeout")


@lenient.step(wait_for="nudge", timeout="200ms")
def may_hear(e: Expense, nudge: Approval | flowkit.TimedOut) -> str:
    return "nobody answered" if isinstance(nudge, flowkit.TimedOut) else "heard"


deadline = flowkit.Workflow("deadline", timeout="300ms")


@deadline.step
def long_step(e: Expense, ctx: flowkit.Context) -> int:
    hit("long")
    while not ctx.cancelled:  # cooperative: stops once the deadline passed
        release.wait(0.02)
    return 0


@deadline.step(after=long_step)
def never(x: int) -> int:
    hit("never")
    return x


fan = flowkit.Workflow("fan")


@fan.step
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True)
def work(i: int, ctx: flowkit.Context) -> int:
    hit("work")
    working.set()
    while not ctx.cancelled and not release.is_set():
        release.wait(0.02)
    return i


@fan.step(after=work)
def gather(xs: list[int]) -> int:
    hit("gather")
    return len(xs)


delayed = flowkit.Workflow("delayed")


@delayed.step
def first(x: int) -> int:
    return x


@delayed.step(after=first, delay="300ms")
def later(x: int) -> int:
    return x + 1


nightly = flowkit.Workflow("nightly", schedule="*/5 * * * *", schedule_input=7)


@nightly.step
def report(x: int) -> int:
    hit("report")
    return x


app = flowkit.App("control", flows=[approvals, quick, lenient, deadline, fan, delayed, nightly])


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(app, tmp_path, threads=4) as a:
        yield a
        release.set()


def test_a_signal_during_the_wait_releases_the_step(ctl: flowkit.App) -> None:
    run = approvals.submit({"amount": 120})
    wait_for_status(run, "waiting", timeout=10)
    statuses = {s.name: s.status.value for s in run.steps()}
    assert statuses == {"submit_expense": "succeeded", "decide": "waiting"}
    assert run.signal("approval", {"approver": "ana", "ok": True}) is True
    assert run.result(timeout=10) == Decision(amount=120, approved=True, by="ana")
    assert calls == {"submit": 1, "decide": 1, "book": 1}


def test_a_signal_sent_before_the_wait_is_kept(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = approvals.submit({"amount": 5})
        assert run.signal("approval", {"approver": "bo", "ok": False}) is False
        a.start_worker()
        assert run.result(timeout=10).by == "bo"


def test_signals_are_validated_and_delivered_once(tmp_path: Path) -> None:
    with embedded(app, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = approvals.submit({"amount": 1})
        with pytest.raises(flowkit.InputValidationError, match="approver"):
            run.signal("approval", {"ok": True})
        with pytest.raises(flowkit.SignalRejected, match="no step of 'approvals' waits for"):
            run.signal("nope", {})
        run.signal("approval", {"approver": "a", "ok": True})
        with pytest.raises(flowkit.SignalRejected, match="already received"):
            run.signal("approval", {"approver": "b", "ok": True})
        a.start_worker()
        assert run.result(timeout=10).by == "a"
        with pytest.raises(flowkit.SignalRejected, match="is succeeded"):
            a.signal(run.id, "approval", {"approver": "c", "ok": True})


def test_a_wait_that_times_out_fails_the_step(ctl: flowkit.App) -> None:
    run = quick.submit({"amount": 1})
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=10)
    assert info.value.error_type == "StepTimeout"
    assert "waited 0.2s for signal 'nudge'" in info.value.error_message


def test_a_wait_that_takes_timed_out_runs_on_its_timeout(ctl: flowkit.App) -> None:
    run = lenient.submit({"amount": 1})
    assert run.result(timeout=10) == "nobody answered"


def test_a_run_past_its_deadline_is_timed_out(ctl: flowkit.App) -> None:
    run = deadline.submit({"amount": 1})
    assert run.wait(timeout=10) is flowkit.RunStatus.TIMED_OUT
    drain(ctl)
    assert calls["never"] == 0
    assert {s.name: s.status.value for s in run.steps()} == {"long_step": "cancelled"}


def test_cancel_a_running_fan_out(ctl: flowkit.App) -> None:
    run = fan.submit(30)
    assert working.wait(10)  # items are running
    assert run.cancel() is True
    assert run.wait(timeout=10) is flowkit.RunStatus.CANCELLED
    assert run.cancel() is False
    drain(ctl)
    steps = run.steps()
    assert calls["gather"] == 0
    assert {s.status.value for s in steps if s.name == "work"} == {"cancelled"}
    assert [s.status.value for s in steps if s.name == "gather"] == ["cancelled"]


def test_a_delayed_step_waits_before_running(ctl: flowkit.App) -> None:
    run = delayed.submit(1)
    assert run.result(timeout=10) == 2
    a, b = run.steps()
    assert a.finished_at is not None and b.started_at is not None
    assert (b.started_at - a.finished_at).total_seconds() >= 0.25


def test_waiting_runs_hold_no_worker_thread(tmp_path: Path) -> None:
    with embedded(app, tmp_path, threads=2) as a:
        waiting = [approvals.submit({"amount": i}) for i in range(6)]
        for run in waiting:
            wait_for_status(run, "waiting", timeout=10)
        # Six runs wait on two threads; other work still gets through.
        assert [delayed.submit(i).result(timeout=10) for i in range(3)] == [1, 2, 3]
        for run in waiting:
            run.signal("approval", {"approver": "x", "ok": True})
        assert all(r.result(timeout=10).approved for r in waiting)
        assert a.runs(status="succeeded", limit=100)


def test_cron_parsing_and_ticks() -> None:
    spec = parse_cron("*/5 * * * *", what="t")
    t = next_tick(spec, datetime(2026, 1, 1, 10, 2, 30, tzinfo=timezone.utc))
    assert t == datetime(2026, 1, 1, 10, 5, tzinfo=timezone.utc)
    assert tick_key(t) == "schedule:2026-01-01T10:05Z"
    with pytest.raises(flowkit.ConfigurationError, match="not a cron expression"):
        flowkit.Workflow("bad", schedule="every tuesday")


def test_two_schedulers_start_each_tick_once(ctl: flowkit.App) -> None:
    first, second = Scheduler(ctl, sweep_every=0), Scheduler(ctl, sweep_every=0)
    ticks = [datetime(2026, 1, 1, 0, 5 * i, tzinfo=timezone.utc) for i in range(1, 11)]
    barrier = threading.Barrier(2)

    def fire(s: Scheduler) -> None:
        barrier.wait()
        for t in ticks:
            s.fire(nightly, t)

    threads = [threading.Thread(target=fire, args=(s,)) for s in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [c for *_, c in first.started + second.started if c]
    assert len(created) == 10
    assert len(ctl.runs(flow="nightly", limit=100)) == 10
    drain(ctl)
    assert calls["report"] == 10


def test_a_scheduler_skips_missed_ticks_and_fires_on_time(ctl: flowkit.App) -> None:
    s = Scheduler(ctl, sweep_every=0)
    s.fire(nightly, datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc))
    clock = [datetime(2026, 1, 1, 1, 2, tzinfo=timezone.utc)]  # 12 ticks missed
    stop = threading.Event()

    def now() -> datetime:
        value = clock[0]
        clock[0] = value + timedelta(minutes=2)  # time flies: each look is 2 minutes later
        if value > datetime(2026, 1, 1, 1, 12, tzinfo=timezone.utc):
            stop.set()
        return value

    s.run(stop, now=now)
    fired = sorted(t for _, t, _, created in s.started if created)
    assert fired[0] == datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
    assert fired[1:] == [
        datetime(2026, 1, 1, 1, 5, tzinfo=timezone.utc),
        datetime(2026, 1, 1, 1, 10, tzinfo=timezone.utc),
    ]


# -- redrive ------------------------------------------------------------------
broken: set[str] = set()

orders = flowkit.Workflow("redrive-orders")


@orders.step(retries=0)
def load(n: int) -> list[int]:
    hit("load")
    return list(range(n))


@orders.step(after=load, each=True, retries=0)
def charge(i: int) -> int:
    hit(f"charge:{i}")
    if f"item{i}" in broken:
        raise RuntimeError(f"card {i} declined")
    return i * 10


@orders.step(after=charge, retries=0)
def receipt(amounts: list[int]) -> int:
    hit("receipt")
    if "receipt" in broken:
        raise RuntimeError("printer jam")
    return sum(amounts)


redrive_app = flowkit.App("redrive", flows=[orders])


@pytest.fixture
def rd(tmp_path: Path) -> Iterator[flowkit.App]:
    broken.clear()
    with embedded(redrive_app, tmp_path, threads=4) as a:
        yield a


def test_retry_from_the_failed_step_keeps_what_came_before(rd: flowkit.App) -> None:
    broken.add("receipt")
    run = orders.submit(4)
    with pytest.raises(flowkit.RunFailed, match="printer jam"):
        run.result(timeout=10)
    broken.clear()
    assert run.retry() == ["receipt"]
    assert run.result(timeout=10) == 60
    assert calls["load"] == 1 and calls["charge:0"] == 1 and calls["receipt"] == 2


def test_retry_a_failed_item_keeps_the_items_that_succeeded(rd: flowkit.App) -> None:
    broken.add("item2")
    run = orders.submit(5)
    with pytest.raises(flowkit.RunFailed, match="card 2 declined"):
        run.result(timeout=10)
    drain(rd)
    kept = {s.item for s in run.steps() if s.name == "charge" and s.status.value == "succeeded"}
    broken.clear()
    assert run.retry() == ["charge"]
    assert run.result(timeout=10) == 100
    assert calls["load"] == 1
    assert calls["charge:2"] == 2
    assert all(calls[f"charge:{i}"] == 1 for i in kept)  # their outputs were reused


def test_retry_from_a_named_step_and_refusals(rd: flowkit.App) -> None:
    run = orders.submit(2)
    assert run.result(timeout=10) == 10
    with pytest.raises(flowkit.RunStateError, match="name one to start from"):
        run.retry()
    with pytest.raises(flowkit.NotFoundError, match="has no step 'ghost'"):
        run.retry(from_step="ghost")
    assert run.retry(from_step="charge") == ["charge"]
    assert run.result(timeout=10) == 10
    assert calls["load"] == 1 and calls["charge:1"] == 2 and calls["receipt"] == 2
    rd.stop_worker()
    rd.configure(embedded_worker=False)
    live = orders.submit(1)
    with pytest.raises(flowkit.RunStateError, match="only a finished run"):
        live.retry()


def test_retry_preview_names_what_runs_again_and_changes_nothing(rd: flowkit.App) -> None:
    broken.add("item1")
    run = orders.submit(3)
    with pytest.raises(flowkit.RunFailed, match="card 1 declined"):
        run.result(timeout=10)
    drain(rd)
    before = [(s.id, s.status) for s in run.steps()]
    kept = sum(1 for s in run.steps() if s.name == "charge" and s.status.value == "succeeded")
    preview = run.retry_preview()
    assert preview == flowkit.RetryPreview(
        run_id=run.id,
        start="charge",
        rerun=("charge", "receipt"),
        reused=("load",),
        kept_items=kept,
    )
    named = run.retry_preview(from_step="receipt")
    assert (named.rerun, named.reused, named.kept_items) == (("receipt",), ("load", "charge"), 0)
    assert [(s.id, s.status) for s in run.steps()] == before
    assert run.status() is flowkit.RunStatus.FAILED
    with pytest.raises(flowkit.NotFoundError, match="has no step 'ghost'"):
        run.retry_preview(from_step="ghost")
    broken.clear()
    assert run.retry() == ["charge"]  # the preview's plan, applied
    assert run.result(timeout=10) == 30
