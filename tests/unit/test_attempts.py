"""The attempt log, a run's signals and the limits in use: the store's reads, on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import flowkit
from flowkit._ids import new_id
from flowkit.store import ClaimLimits, Gate, NewStep, Outcome, Store
from flowkit.store.db import utcnow


def _run(store: Store, n: int = 1, queue: str = "q") -> tuple[str, list[NewStep]]:
    steps = [NewStep(id=new_id(), name=f"s{i}", queue=queue, input={"i": i}) for i in range(n)]
    created = store.runs.create(run_id=new_id(), flow="f", key=None, input={}, first=steps)
    return created.run_id, steps


def test_a_retried_then_failed_step_logs_both_attempts(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=60_000, starts_run=True, worker_id="w1")
    first_start = store.get_steps(run_id)[0].started_at
    err1 = {"type": "TimeoutError", "message": "slow"}
    assert store.runs.schedule_retry(step.id, err1, utcnow())
    store.runs.claim(step.id, "m2", lease_ms=60_000, starts_run=False, worker_id="w2")
    err2 = {"type": "ValueError", "message": "bad"}
    assert store.runs.fail(step.id, run_id, err2)
    assert not store.runs.fail(step.id, run_id, err2)
    retried, failed = store.get_attempts(run_id)
    assert isinstance(retried, flowkit.AttemptInfo)
    assert (retried.attempt, retried.outcome, retried.worker_id) == (1, "retried", "w1")
    assert retried.started_at == first_start and retried.error == err1
    assert retried.finished_at is not None and retried.duration is not None
    assert (failed.attempt, failed.outcome, failed.worker_id, failed.error) == (
        2,
        "failed",
        "w2",
        err2,
    )
    (row,) = store.get_steps(run_id)
    assert row.attempts == 2 and row.started_at == failed.started_at  # the final one, twice


def test_a_succeeded_attempt_is_only_the_step_row(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=60_000, starts_run=True)
    store.runs.complete(step.id, "m1", run_id, Outcome(output=1))
    assert store.get_attempts(run_id) == []


def test_a_takeover_logs_the_lost_attempt(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=60_000, starts_run=True, worker_id="dead")
    start = store.get_steps(run_id)[0].started_at
    # A first delivery takes the one-statement path; a redelivery checks for a takeover.
    again = store.runs.claim(step.id, "m1", lease_ms=60_000, starts_run=True, worker_id="w2")
    assert again is not None and again.attempts == 2
    (lost,) = store.get_attempts(run_id)
    assert (lost.attempt, lost.outcome, lost.worker_id, lost.started_at) == (
        1,
        "lost",
        "dead",
        start,
    )
    assert lost.error is None
    # A redelivered copy of a queued step's message is no takeover: nothing more logged.
    run2, (other,) = _run(store)
    assert store.runs.claim(other.id, "m3", lease_ms=1000, starts_run=True, redelivered=True)
    assert store.get_attempts(run2) == []
    assert store.get_run(run_id).status is flowkit.RunStatus.RUNNING  # type: ignore[union-attr]


def test_the_recovery_sweep_logs_a_lost_attempt(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=0, starts_run=True, worker_id="gone")
    assert {d.id for d in store.runs.due_steps(older_than=0)} == {step.id}
    (lost,) = store.get_attempts(run_id)
    assert (lost.step_id, lost.attempt, lost.outcome, lost.worker_id) == (
        step.id,
        1,
        "lost",
        "gone",
    )
    store.runs.due_steps(older_than=0)  # queued now: not lost again
    assert len(store.get_attempts(run_id)) == 1


def test_the_attempts_go_with_their_run(store: Store) -> None:
    run_id, (step,) = _run(store)
    store.runs.claim(step.id, "m1", lease_ms=60_000, starts_run=True)
    store.runs.fail(step.id, run_id, {"type": "E", "message": "x"})
    assert store.get_attempts(run_id) and store.get_attempts("nope") == []


def test_signals_received_and_waits(store: Store) -> None:
    waiting = NewStep(id=new_id(), name="decide", queue="q", input=None, pending=1)
    gate = Gate(
        name="decide",
        delta=-1,
        sources=(),
        multi=False,
        signal="approval",
        signal_timeout_ms=60_000,
    )
    created = store.runs.create(
        run_id=new_id(),
        flow="f",
        key=None,
        input={"a": 1},
        first=[],
        waiting=[waiting],
        entry_waits=[gate],
    )
    run_id = created.run_id
    (wait,) = store.signal_waits(run_id)
    assert (wait.step_id, wait.name, wait.pending) == (waiting.id, "decide", 1)
    assert wait.deadline is not None and wait.deadline > utcnow() + timedelta(seconds=50)
    assert store.get_signals(run_id) == []
    store.control.deliver_signal(run_id, "early", {"token": "x"}, None)
    store.control.deliver_signal(run_id, "approval", {"ok": True}, gate)
    got = store.get_signals(run_id)
    assert [(s.name, s.payload) for s in got] == [
        ("early", {"token": "x"}),
        ("approval", {"ok": True}),
    ]
    assert all(s.received_at is not None for s in got) and "x" not in repr(got[0])
    assert store.signal_waits(run_id) == []  # the signal opened it


def test_limits_in_use(store: Store) -> None:
    run_id, steps = _run(store, n=3, queue="lim")
    a = ClaimLimits(queue="lim", queue_concurrency=5, key="f.s:acme", key_concurrency=2)
    b = ClaimLimits(
        queue="lim", key="f.s:be_ta", key_concurrency=2, rates=(("f.s:acme", 10, 60_000),)
    )
    rate = ClaimLimits(queue="lim", rates=(("queue:lim", 10, 60_000),))
    for step, lim in zip(steps, (a, b, rate), strict=True):
        assert store.runs.claim(
            step.id, "m" + step.id, lease_ms=60_000, starts_run=True, limits=lim
        )
    used = store.in_use
    assert used.running_by_queue(["lim", "other"]) == {"lim": 3, "other": 0}
    assert used.running_by_key("f.s") == {"f.s:acme": 1, "f.s:be_ta": 1}
    assert used.running_by_key("f_s") == {}  # the scope is no LIKE pattern
    assert used.rate_starts("f.s", 60_000) == {"f.s:acme": 1}
    assert used.rate_starts("queue:lim", 60_000) == {"queue:lim": 1}
    store.runs.complete(steps[0].id, "m" + steps[0].id, run_id, Outcome(output=1))
    assert used.running_by_key("f.s") == {"f.s:be_ta": 1}
    assert used.running_by_queue(["lim"]) == {"lim": 2}
