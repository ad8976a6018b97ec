"""Worker rows and heartbeats (store.workers, runtime.heartbeat), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit._ids import new_id
from flowkit.runtime.heartbeat import HEARTBEAT_SECONDS, Heartbeat, heartbeat_seconds
from flowkit.store import Claim, ClaimLimits, NewStep, Outcome, Store
from flowkit.store.db import utcnow
from flowkit.store.schema import workers
from flowkit.testing import embedded


@flowkit.stage(queue="wk.work")
def add_one(n: int) -> int:
    return n + 1


pipeline = flowkit.Pipeline("wk-pipeline", [add_one])

app = flowkit.App("wk", flows=[pipeline])


def _register(store: Store, **kw: Any) -> str:
    args: dict[str, Any] = {
        "host": "h1",
        "pid": 10,
        "queues": ["b", "a"],
        "threads": 4,
        "version": "0.2.0",
        **kw,
    }
    return store.workers.register(**args)


def _age(store: Store, worker_id: str, seconds: float) -> None:
    """Move a worker's last heartbeat ``seconds`` into the past."""
    with store.db.transaction() as conn:
        conn.execute(
            workers.update()
            .where(workers.c.id == worker_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def _by_id(store: Store, **kw: Any) -> dict[str, flowkit.WorkerInfo]:
    return {w.id: w for w in store.workers.list(**kw)}


def test_register_records_who_the_worker_is(store: Store) -> None:
    before = utcnow()
    wid = _register(store)
    every = _register(store, host="h2", pid=11, queues=None, threads=1)
    assert len(wid) == 32 and wid != every
    listed = store.workers.list()
    assert [w.id for w in listed] == [every, wid]  # newest first
    w = listed[1]
    assert (w.host, w.pid, w.queues, w.threads, w.version) == ("h1", 10, ("a", "b"), 4, "0.2.0")
    assert w.started_at >= before and w.heartbeat_at == w.started_at
    assert w.stopped_at is None and w.alive and w.running == ()
    assert listed[0].queues is None


def test_heartbeats_keep_a_worker_alive_and_stale_ones_are_not(store: Store) -> None:
    wid = _register(store)
    _age(store, wid, 20)
    assert not _by_id(store)[wid].alive  # default stale_after: 15 s
    assert _by_id(store, stale_after=30)[wid].alive
    store.workers.heartbeat(wid)
    w = _by_id(store)[wid]
    assert w.alive and w.heartbeat_at > w.started_at


def test_a_stopped_worker_is_not_alive_and_ages_out_of_the_list(store: Store) -> None:
    stopped = _register(store)
    killed = _register(store)
    store.workers.stopped(stopped)
    w = _by_id(store)[stopped]
    assert not w.alive and w.stopped_at is not None and w.heartbeat_at == w.stopped_at
    store.workers.stopped(stopped)  # a second stop keeps the first time
    assert _by_id(store)[stopped].stopped_at == w.stopped_at
    _age(store, stopped, 7200)
    _age(store, killed, 7200)
    listed = _by_id(store)
    # Gone for longer than gone_within: a clean stop drops out, a crash stays visible.
    assert stopped not in listed
    assert killed in listed and not listed[killed].alive
    assert stopped in _by_id(store, gone_within=10_000)


def test_list_shows_the_running_steps_each_worker_holds(store: Store) -> None:
    w1, w2 = _register(store), _register(store)
    steps = [NewStep(id=new_id(), name=f"s{i}", queue="q", input={}, item=i) for i in range(3)]
    run_id = store.runs.create(run_id=new_id(), flow="f", key=None, input={}, first=steps).run_id
    store.runs.claim(steps[0].id, "m0", lease_ms=60_000, starts_run=True, worker_id=w1)
    store.runs.claim(steps[1].id, "m1", lease_ms=60_000, starts_run=True, worker_id=w1)
    store.runs.claim(steps[2].id, "m2", lease_ms=60_000, starts_run=True, worker_id=w2)
    store.runs.complete(steps[1].id, "m1", run_id, Outcome(output=1))
    listed = _by_id(store)
    (held,) = listed[w1].running
    assert (held.step_id, held.run_id, held.flow, held.name, held.item) == (
        steps[0].id,
        run_id,
        "f",
        "s0",
        0,
    )
    assert held.started_at is not None and held.lease_until is not None
    assert held.lease_until > held.started_at
    assert [r.step_id for r in listed[w2].running] == [steps[2].id]
    # The finished step still says who ran it.
    assert {s.name: s.worker_id for s in store.get_steps(run_id)} == {
        "s0": w1,
        "s1": w1,
        "s2": w2,
    }


def test_a_limited_claim_records_the_worker_too(store: Store) -> None:
    wid = _register(store)
    step = NewStep(id=new_id(), name="s", queue="q", input={})
    run_id = store.runs.create(run_id=new_id(), flow="f", key=None, input={}, first=[step]).run_id
    limits = ClaimLimits(queue="q", queue_concurrency=5)
    claim = store.runs.claim(
        step.id, "m", lease_ms=1000, starts_run=True, limits=limits, worker_id=wid
    )
    assert isinstance(claim, Claim)
    assert store.get_steps(run_id)[0].worker_id == wid


def test_the_heartbeat_thread_registers_beats_and_stops(store: Store) -> None:
    beat = Heartbeat(store.workers, queues={"q2", "q1"}, threads=3, every=0.05)
    try:
        (w,) = store.workers.list()
        assert w.id == beat.worker_id and w.queues == ("q1", "q2") and w.threads == 3
        assert (w.host, w.pid, w.version) == (
            socket.gethostname(),
            os.getpid(),
            flowkit.__version__,
        )
        first = w.heartbeat_at
        beaten = threading.Event()
        for _ in range(200):  # bounded: 200 waits of 50 ms
            if store.workers.list()[0].heartbeat_at > first:
                beaten.set()
                break
            beaten.wait(0.05)
        assert beaten.is_set(), "no heartbeat within 10 s"
    finally:
        beat.stop()
    (w,) = store.workers.list()
    assert w.stopped_at is not None and not w.alive


class _Flaky:
    """A Workers part whose heartbeats fail with StoreError twice, then succeed."""

    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()
        self.stops: list[str] = []

    def register(self, **_: Any) -> str:
        return "w" * 32

    def heartbeat(self, worker_id: str, *, free_since: Any = None) -> None:
        self.calls += 1
        if self.calls <= 2:
            raise flowkit.StoreError("database unavailable: gone")
        self.done.set()

    def stopped(self, worker_id: str) -> None:
        self.stops.append(worker_id)
        raise flowkit.StoreError("database unavailable: still gone")


def test_a_heartbeat_that_hits_a_store_error_warns_and_beats_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = _Flaky()
    with caplog.at_level(logging.WARNING, logger="flowkit.worker"):
        beat = Heartbeat(flaky, queues=None, threads=1, every=0.01)  # type: ignore[arg-type]
        assert flaky.done.wait(10)
        beat.stop()  # its StoreError is logged, not raised
    assert flaky.calls >= 3 and flaky.stops == ["w" * 32]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("heartbeat failed" in m for m in warnings) >= 2
    assert any("could not record its stop" in m for m in warnings)


def test_the_heartbeat_interval_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLOWKIT_HEARTBEAT_SECONDS", raising=False)
    assert heartbeat_seconds() == HEARTBEAT_SECONDS == 2.0
    monkeypatch.setenv("FLOWKIT_HEARTBEAT_SECONDS", "0.5")
    assert heartbeat_seconds() == 0.5
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("FLOWKIT_HEARTBEAT_SECONDS", bad)
        with pytest.raises(flowkit.ConfigurationError, match="FLOWKIT_HEARTBEAT_SECONDS"):
            heartbeat_seconds()


def test_an_app_worker_registers_records_its_steps_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_HEARTBEAT_SECONDS", "0.2")
    with embedded(app, tmp_path, threads=2) as a:
        run = pipeline.submit(1)
        assert run.result(timeout=30) == 2
        (w,) = a.store.workers.list()
        assert w.alive and w.threads == 2 and w.queues == ("wk.work",)  # its App's queues
        assert a.engine.worker_id == w.id
        assert [s.worker_id for s in run.steps()] == [w.id]
        a.start_worker()  # already running: still one worker
        assert len(a.store.workers.list()) == 1
        a.stop_worker()
        assert a.engine.worker_id is not None  # the engine keeps the last id, harmless
        (w,) = a.store.workers.list()
        assert w.stopped_at is not None and not w.alive
        queues = sorted(a.queues())
        a.start_worker(queues=queues, threads=1)  # a new start is a new worker
        listed = a.store.workers.list()
        assert len(listed) == 2 and listed[0].alive and listed[0].queues == tuple(queues)
        assert a.engine.worker_id == listed[0].id
