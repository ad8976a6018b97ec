"""Chained execution on the Engine's own parts: a successor this process serves runs next
in the same thread, claimed by its parent's completion, with no message of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flowkit
from flowkit.errors import ConfigurationError
from flowkit.runtime.chain import ChainLimits
from flowkit.runtime.engine import Engine
from flowkit.runtime.execute import Delivery
from flowkit.runtime.publisher import MemoryPublisher
from flowkit.status import RunStatus
from flowkit.store import Store


class Killed(BaseException):
    """Stands for the process dying in the middle of a step (nothing catches it)."""


_fails_left = {"flaky": 0, "dies": 0}


def _stage(name: str, **options: Any) -> flowkit.Stage[Any, Any]:
    def step(x: int) -> int:
        if name in _fails_left and _fails_left[name] > 0:
            _fails_left[name] -= 1
            if name == "dies":
                raise Killed()
            raise RuntimeError("flaky")
        return x + 1

    step.__name__ = name
    return flowkit.stage(name=name, queue=f"q.{name}", **options)(step)


a, b, c, d = (_stage(n) for n in "abcd")
four = flowkit.Pipeline("four", [a, b, c, d]).compile()
lone = _stage("lone", chain=False)
hop = flowkit.Pipeline("hop", [_stage("h1"), lone, _stage("h3")]).compile()
flaky = _stage("flaky", retries=2, min_backoff="10ms", max_backoff="10ms")
retrying = flowkit.Pipeline("retrying", [_stage("r1"), flaky]).compile()
dies = _stage("dies")
cut = flowkit.Pipeline("cut", [_stage("c1"), dies, _stage("c3")]).compile()
FLOWS = [four, hop, retrying, cut]
QUEUES = {s.queue for f in FLOWS for s in f.steps.values()}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(f"sqlite:///{tmp_path / 'chain.db'}", pool_size=2)
    s.ensure_schema()
    yield s
    s.dispose()


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
def engine(store: Store, publisher: MemoryPublisher) -> Engine:
    e = Engine(FLOWS, store, publisher)
    e.serve(QUEUES)
    return e


def _deliver(engine: Engine, flow: Any, message: Any) -> None:
    stage = flow.steps[message.actor_name.split(".", 1)[1]]
    engine.execute(flow, stage, message.kwargs["step_id"], Delivery.of(flow.name, message))


def _claimed_by(store: Store, run_id: str) -> list[str | None]:
    return [store.step_row(s.id).claimed_by for s in store.get_steps(run_id)]  # type: ignore[union-attr]


def test_a_served_successor_runs_in_the_same_thread_without_a_message(
    engine: Engine, store: Store, publisher: MemoryPublisher
) -> None:
    started: list[str] = []

    class Started(flowkit.Observer):
        def step_started(self, *, flow: str, step: str, queue: str, attempt: int) -> None:
            started.append(step)

    engine.observers.append(Started())
    run_id, _ = engine.submit(four, 1, key=None)
    (first,) = publisher.take()
    _deliver(engine, four, first)
    assert publisher.take() == []  # no hop: every successor ran here
    assert store.run_state(run_id)[:2] == ("succeeded", 5)  # type: ignore[index]
    steps = store.get_steps(run_id)
    assert [(s.name, s.status.value, s.attempts) for s in steps] == [
        (n, "succeeded", 1) for n in "abcd"
    ]
    # Chained steps are still steps: each has its row, its start, its hooks.
    assert started == ["a", "b", "c", "d"]
    assert set(_claimed_by(store, run_id)) == {first.message_id}


def test_a_successor_on_a_queue_this_process_does_not_serve_is_published(
    engine: Engine, store: Store, publisher: MemoryPublisher
) -> None:
    engine.serve({"q.a", "q.b"})  # as `flowkit worker --queues q.a q.b`
    run_id, _ = engine.submit(four, 1, key=None)
    _deliver(engine, four, publisher.take()[0])
    (nxt,) = publisher.take()
    assert nxt.actor_name == "four.c"
    assert [s.status.value for s in store.get_steps(run_id)] == ["succeeded", "succeeded", "queued"]


def test_no_chain_and_chain_false_hop_through_the_broker(
    engine: Engine, store: Store, publisher: MemoryPublisher
) -> None:
    run_id, _ = engine.submit(hop, 1, key=None)
    _deliver(engine, hop, publisher.take()[0])
    (second,) = publisher.take()
    assert second.actor_name == "hop.lone"  # chain=False: its own message
    _deliver(engine, hop, second)
    assert publisher.take() == []  # h3 chains after lone again
    assert store.run_state(run_id)[0] == "succeeded"  # type: ignore[index]

    engine.serve(QUEUES, chain=False)  # --no-chain
    run_id, _ = engine.submit(four, 1, key=None)
    _deliver(engine, four, publisher.take()[0])
    assert [m.actor_name for m in publisher.take()] == ["four.b"]


def test_a_chain_stops_after_its_step_limit(
    engine: Engine, store: Store, publisher: MemoryPublisher
) -> None:
    engine.steps.chain_limits = ChainLimits(steps=2)
    run_id, _ = engine.submit(four, 1, key=None)
    _deliver(engine, four, publisher.take()[0])
    (third,) = publisher.take()
    assert third.actor_name == "four.c"
    _deliver(engine, four, third)
    assert store.run_state(run_id)[0] == "succeeded"  # type: ignore[index]


def test_a_chained_step_that_fails_is_retried_by_a_timer_message(
    engine: Engine, store: Store, publisher: MemoryPublisher
) -> None:
    _fails_left["flaky"] = 1
    run_id, _ = engine.submit(retrying, 1, key=None)
    _deliver(engine, retrying, publisher.take()[0])  # returns: the first message is done
    [(retry, delay)] = publisher.sent
    publisher.take()
    assert retry.actor_name == "retrying.flaky" and delay is not None and delay <= 10
    flaky_row = store.get_steps(run_id)[1]
    assert (flaky_row.status.value, flaky_row.attempts) == ("queued", 1)
    _deliver(engine, retrying, retry)
    assert store.run_state(run_id)[:2] == ("succeeded", 3)  # type: ignore[index]
    assert [a.outcome for a in store.get_attempts(run_id)] == ["retried"]


def test_a_chain_cut_by_a_dead_worker_resumes_when_its_message_comes_back(
    engine: Engine, store: Store, publisher: MemoryPublisher
) -> None:
    _fails_left["dies"] = 1
    run_id, _ = engine.submit(cut, 1, key=None)
    (first,) = publisher.take()
    with pytest.raises(Killed):
        _deliver(engine, cut, first)
    c1, left = store.get_steps(run_id)
    assert (c1.status.value, left.status.value) == ("succeeded", "running")

    # RabbitMQ redelivers the unacknowledged message that started the chain.
    again = first.copy()
    again.options["retries"] = 1  # what a redelivery looks like to Delivery.of
    _deliver(engine, cut, again)
    (resent,) = publisher.take()
    assert (resent.actor_name, resent.kwargs["step_id"]) == ("cut.dies", left.id)
    assert store.get_steps(run_id)[1].status.value == "queued"
    assert [(a.attempt, a.outcome) for a in store.get_attempts(run_id)] == [(1, "lost")]

    _deliver(engine, cut, resent)
    assert store.run_state(run_id)[:2] == ("succeeded", 4)  # type: ignore[index]
    assert store.get_steps(run_id)[1].attempts == 2


def test_chain_option_and_limits_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="chain must be True or False"):
        flowkit.stage(name="x", chain="yes")(lambda x: x)  # type: ignore[arg-type]
    monkeypatch.setenv("FLOWKIT_CHAIN_STEPS", "0")
    with pytest.raises(ConfigurationError, match="FLOWKIT_CHAIN_STEPS"):
        ChainLimits.from_env()


def test_the_embedded_worker_chains(tmp_path: Path) -> None:
    app = flowkit.App(
        "chained",
        flows=[flowkit.Pipeline("emb", [_stage("e1"), _stage("e2"), _stage("e3")])],
        database_url=f"sqlite:///{tmp_path / 'emb.db'}",
    )
    with app:
        run = app.submit("emb", 1)
        assert run.result(timeout=30) == 4
        ids = {app.store.step_row(s.id).claimed_by for s in run.steps()}  # type: ignore[union-attr]
        assert len(ids) == 1
        assert run.status() is RunStatus.SUCCEEDED
