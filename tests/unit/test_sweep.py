"""The recovery sweep's rules, on SQLite and PostgreSQL: evidence on rows, never a flood.

An Engine built by hand over the ``store`` fixture and a :class:`MemoryPublisher`
(what it publishes is what the sweep decided), on a :class:`VirtualClock` so that
leases and heartbeats pass without waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import flowkit
from flowkit._clock import install
from flowkit.runtime.engine import Engine
from flowkit.runtime.load import Load
from flowkit.runtime.publisher import MemoryPublisher
from flowkit.runtime.sweep import Presence, sweep_seconds
from flowkit.store import Store
from flowkit.store.db import utcnow
from flowkit.store.schema import attempts, steps
from flowkit.store.sweep import DUTY_LOCK, SETTLE
from flowkit.testing import VirtualClock

QUEUE = "sweep.q"


@flowkit.stage(queue=QUEUE)
def only(n: int) -> int:
    return n + 1


swept = flowkit.Pipeline("sweep-rules", [only])
GRAPH = swept.compile()


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    c = VirtualClock()
    previous = install(c)
    yield c
    install(previous)


@pytest.fixture
def parts(store: Store, clock: VirtualClock) -> tuple[Engine, MemoryPublisher]:
    publisher = MemoryPublisher()
    return Engine([GRAPH], store, publisher), publisher


def submit(engine: Engine, publisher: MemoryPublisher, n: int = 1) -> list[str]:
    """Store ``n`` runs and lose their messages; their step ids."""
    runs = [engine.submit(GRAPH, i, key=None)[0] for i in range(n)]
    publisher.take()  # the messages are lost
    return [s.id for r in runs for s in engine.store.get_steps(r)]


def free_worker(store: Store, since: datetime, queues: list[str] | None = None) -> str:
    """A live worker on ``queues`` (default: the flow's) with a thread free ``since``."""
    wid = store.workers.register(host="h", pid=1, queues=queues or [QUEUE], threads=4, version="t")
    store.workers.heartbeat(wid, free_since=since)
    return wid


def status_of(store: Store, step_id: str) -> str:
    row = store.step_row(step_id)
    assert row is not None
    return row.status


def published(publisher: MemoryPublisher) -> list[str]:
    return [m.kwargs["step_id"] for m in publisher.take()]


def test_a_lost_message_is_republished_once_per_growing_lease(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock
) -> None:
    engine, publisher = parts
    t0 = utcnow()
    (step,) = submit(engine, publisher)
    wid = free_worker(engine.store, t0)
    assert engine.sweep() == 0  # the heartbeat is not yet SETTLE past the publish
    clock.advance(seconds=3)
    engine.store.workers.heartbeat(wid, free_since=t0)
    assert engine.sweep() == 1 and published(publisher) == [step]
    for _ in range(3):  # still free, still queued: never twice within the lease
        clock.advance(seconds=15)
        engine.store.workers.heartbeat(wid, free_since=t0)
        assert engine.sweep() == 0
    clock.advance(seconds=20)  # one minute since the re-publish
    engine.store.workers.heartbeat(wid, free_since=t0)
    assert engine.sweep() == 1 and published(publisher) == [step]
    clock.advance(seconds=70)  # the second lease is two minutes
    engine.store.workers.heartbeat(wid, free_since=t0)
    assert engine.sweep() == 0
    clock.advance(seconds=55)
    engine.store.workers.heartbeat(wid, free_since=t0)
    assert engine.sweep() == 1 and published(publisher) == [step]
    with engine.store.db.transaction() as conn:
        row = conn.execute(sa.select(steps.c.republishes).where(steps.c.id == step)).one()
    assert row.republishes == 3


def test_no_evidence_no_republish_however_old_the_step(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock
) -> None:
    engine, publisher = parts
    t0 = utcnow()
    submit(engine, publisher, 3)
    busy = free_worker(engine.store, t0)
    other = free_worker(engine.store, t0, queues=["another.queue"])
    stopped = free_worker(engine.store, t0)
    clock.advance(seconds=3600)
    engine.store.workers.heartbeat(busy, free_since=None)  # every thread busy: a backlog
    engine.store.workers.heartbeat(other, free_since=t0)  # free, but on another queue
    engine.store.workers.heartbeat(stopped, free_since=t0)
    engine.store.workers.stopped(stopped)  # its consumers are gone
    fresh = free_worker(engine.store, utcnow() - timedelta(seconds=1))  # free for 1s only
    assert engine.sweep() == 0 and published(publisher) == []
    assert engine.recover(older_than=0) == 0  # `flowkit recover` goes by the same rules
    # The operator's override: every queued step, whatever the evidence.
    assert engine.recover(older_than=60, force=True) == 3 and len(published(publisher)) == 3
    # A worker free for SETTLE on the queue is evidence enough.
    clock.advance(seconds=SETTLE.total_seconds())
    engine.store.workers.heartbeat(fresh, free_since=utcnow() - SETTLE - timedelta(seconds=1))
    assert engine.sweep() == 3 and len(published(publisher)) == 3


def test_the_sweepers_own_evidence_needs_no_heartbeat(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock
) -> None:
    engine, publisher = parts
    (step,) = submit(engine, publisher)
    assert engine.sweep(local={QUEUE: utcnow() - SETTLE}) == 0  # published since then
    clock.advance(seconds=3)
    assert engine.sweep(local={"elsewhere": utcnow() - SETTLE}) == 0
    assert engine.sweep(local={QUEUE: utcnow() - SETTLE}) == 1
    assert published(publisher) == [step]


def test_a_dead_workers_running_steps_are_resumed_within_seconds(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock
) -> None:
    engine, publisher = parts
    store = engine.store
    dead_step, live_step = submit(engine, publisher, 2)
    dead = store.workers.register(host="h", pid=1, queues=[QUEUE], threads=1, version="t")
    live = store.workers.register(host="h", pid=2, queues=[QUEUE], threads=1, version="t")
    hour = 3_600_000  # a step without a timeout: its lease is an hour
    for sid, wid in ((dead_step, dead), (live_step, live)):
        claim = store.runs.claim(
            sid, f"m-{sid}", lease_ms=hour, starts_run=True, redelivered=False, worker_id=wid
        )
        assert claim is not None
    clock.advance(seconds=10)
    store.workers.heartbeat(live)
    assert engine.sweep(stale_after=15) == 0  # 10 s without a beat is not dead yet
    clock.advance(seconds=6)
    store.workers.heartbeat(live)  # the live one beats on (busy: no evidence)
    assert engine.sweep(stale_after=15) == 1
    assert published(publisher) == [dead_step]
    assert status_of(store, dead_step) == "queued"
    assert status_of(store, live_step) == "running"
    with store.db.transaction() as conn:
        logged = conn.execute(
            sa.select(attempts.c.outcome, attempts.c.worker_id).where(
                attempts.c.step_id == dead_step
            )
        ).all()
    assert [(r.outcome, r.worker_id) for r in logged] == [("lost", dead)]
    assert engine.sweep(stale_after=15) == 0  # once: it is queued, within its lease
    # A redelivery of the dead worker's message claims it as any queued step.
    again = store.runs.claim(
        dead_step, f"m-{dead_step}", lease_ms=hour, starts_run=False, worker_id=live
    )
    assert again is not None and again.attempts == 2


def test_a_sweeper_never_takes_its_own_worker_for_dead(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock
) -> None:
    engine, publisher = parts
    (sid,) = submit(engine, publisher)
    me = engine.store.workers.register(host="h", pid=1, queues=[QUEUE], threads=1, version="t")
    engine.worker_id = me
    assert engine.store.runs.claim(sid, "m", lease_ms=3_600_000, starts_run=True, worker_id=me)
    clock.advance(seconds=60)  # its heartbeat thread stalled, say; it is still here
    assert engine.sweep(stale_after=15) == 0


def test_two_passes_never_publish_one_step_twice(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock
) -> None:
    engine, publisher = parts
    submit(engine, publisher, 5)
    clock.advance(seconds=3)
    local = {QUEUE: utcnow() - SETTLE}
    first = engine.store.sweep.run_pass(now=utcnow(), stale_after=15, local=local)
    second = engine.store.sweep.run_pass(now=utcnow(), stale_after=15, local=local)
    assert first is not None and len(first) == 5
    assert second == []


def test_only_one_of_two_sweepers_acts_while_the_duty_is_held(
    parts: tuple[Engine, MemoryPublisher], clock: VirtualClock, store: Store
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's; SQLite serializes its writers")
    engine, publisher = parts
    submit(engine, publisher, 2)
    clock.advance(seconds=3)
    local = {QUEUE: utcnow() - SETTLE}
    other = sa.create_engine(store.db.sql.url)
    try:
        with other.begin() as conn:  # another worker's pass, under way
            held = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(DUTY_LOCK)))
            assert held.scalar() is True
            assert engine.sweep(local=local) is None
            assert published(publisher) == []
        assert engine.sweep(local=local) == 2  # its pass is over: this one acts
    finally:
        other.dispose()


def test_load_knows_since_when_a_thread_is_free(clock: VirtualClock) -> None:
    load = Load()
    assert load.free_since is None  # no worker serves yet
    load.serve(2)
    started = load.free_since
    assert started is not None
    with load.running():
        clock.advance(seconds=5)
        assert load.free_since == started  # one of two threads is still free
        with load.running():
            assert load.free_since is None  # both busy: no evidence
        assert load.free_since is not None and load.free_since > started
    load.close()
    assert load.free_since is None


def test_the_sweep_interval_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_SWEEP_SECONDS", "0.5")
    assert sweep_seconds() == 0.5
    monkeypatch.setenv("FLOWKIT_SWEEP_SECONDS", "soon")
    with pytest.raises(flowkit.ConfigurationError, match="FLOWKIT_SWEEP_SECONDS"):
        sweep_seconds()


def test_an_embedded_worker_republishes_a_lost_message_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_SWEEP_SECONDS", "0.2")
    app = flowkit.App(
        "sweep-embedded",
        flows=[swept],
        broker_url="memory://",
        database_url=f"sqlite:///{tmp_path / 'e.db'}",
        embedded_worker=False,
    )
    try:
        run = app.submit(swept, 41)
        app.broker.flush_all()  # its message is lost
        app.start_worker(threads=2)
        assert isinstance(app._beat, Presence)
        assert run.result(timeout=20) == 42  # no recover: the worker's own sweep
        (row,) = app.store.workers.list()
        assert row.queues == (QUEUE,)
    finally:
        app.close()
