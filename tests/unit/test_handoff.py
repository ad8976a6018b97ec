"""The concurrency hand-off on an Engine built by hand (SQLite and PostgreSQL, the
in-memory publisher): a step over a concurrency limit waits as a row, and the step
that frees the slot hands it to the oldest waiter of its key."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from pydantic import BaseModel

import flowkit
from flowkit._clock import DUE_OPTION, Clock, install
from flowkit.errors import BrokerError
from flowkit.graph import FlowGraph
from flowkit.runtime.engine import Engine
from flowkit.runtime.execute import Delivery
from flowkit.runtime.outcomes import StepFailed
from flowkit.runtime.publisher import MemoryPublisher
from flowkit.status import RunStatus, StepStatus
from flowkit.store import Store
from flowkit.store.db import aware, utcnow
from flowkit.store.handoff import FALLBACK_MS
from flowkit.store.schema import steps

Message = dramatiq.Message[Any]

#: per job number: set by the step when it starts; the step returns once released
started: defaultdict[int, threading.Event] = defaultdict(threading.Event)
release: defaultdict[int, threading.Event] = defaultdict(threading.Event)
#: job numbers whose attempt raises (a retry, or a final failure)
failing: set[int] = set()


class Job(BaseModel):
    tenant: str = "t"
    n: int


def work(job: Job) -> int:
    started[job.n].set()
    if not release[job.n].wait(30):
        raise TimeoutError(f"job {job.n} was never released")
    if job.n in failing:
        failing.discard(job.n)
        raise ValueError(f"job {job.n} fails")
    return job.n


def work_then_refuse(job: Job) -> int:
    work(job)
    raise flowkit.PermanentError(f"job {job.n} is refused")


ocr = flowkit.stage(name="ocr", queue="ho.ocr", concurrency=1, retries=2)(work)
tenant = flowkit.stage(
    name="tenant", queue="ho.tenant", concurrency=1, concurrency_key=lambda j: j.tenant
)(work)
scan = flowkit.stage(name="scan", queue=flowkit.Queue("ho.scan", concurrency=1))(work)
strict = flowkit.stage(name="strict", queue="ho.strict", concurrency=1, retries=0)(work_then_refuse)

OCR = flowkit.Pipeline("ho-ocr", [ocr]).compile()
TENANT = flowkit.Pipeline("ho-tenant", [tenant]).compile()
SCAN = flowkit.Pipeline("ho-scan", [scan]).compile()
STRICT = flowkit.Pipeline("ho-strict", [strict]).compile()


class Shifted(Clock):
    """The wall clock, moved forward by ``ahead``: a fallback timer falls due at once."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.ahead


class FlakyPublisher(MemoryPublisher):
    """Loses the next hand-off's publish (the broker went away), as asked."""

    lose_next = False

    def publish_many(self, items: Any) -> None:
        if self.lose_next:
            self.lose_next = False
            raise BrokerError("the broker is gone")
        super().publish_many(items)


class Harness:
    """An Engine over the store, its messages kept; steps run in threads of their own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.publisher = FlakyPublisher()
        self.engine = Engine([OCR, TENANT, SCAN, STRICT], store, self.publisher)
        self.threads: list[threading.Thread] = []
        self.raised: dict[int, BaseException] = {}

    def submit(self, flow: FlowGraph, n: int, tenant: str = "t") -> Message:
        self.engine.submit(flow, {"tenant": tenant, "n": n}, key=f"key-{n}", priority=n)
        (message,) = self.publisher.take()
        return message

    def deliver(self, flow: FlowGraph, message: Message) -> None:
        stage = flow.steps[message.actor_name.split(".", 1)[1]]
        got = Delivery.of(flow.name, message)
        self.engine.execute(flow, stage, message.kwargs["step_id"], got)

    def start(self, flow: FlowGraph, message: Message, n: int) -> None:
        """Deliver ``message`` in a thread of its own; return once job ``n`` is running."""

        def run() -> None:
            try:
                self.deliver(flow, message)
            except BaseException as exc:  # a retry or a failure, checked by the test
                self.raised[n] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        assert started[n].wait(10), f"job {n} did not start"

    def finish(self, n: int) -> None:
        """Let job ``n`` return, and wait for its thread (its commit and publishes).

        Only one thread runs a step at a time where it is called (the others wait).
        """
        release[n].set()
        for thread in self.threads:
            thread.join(10)
        self.threads = [t for t in self.threads if t.is_alive()]

    def sent(self) -> list[tuple[Message, int | None]]:
        """The messages published since the last call, with their delays."""
        sent, self.publisher.sent = self.publisher.sent, []
        return sent

    def row(self, message: Message) -> Any:
        with self.store.db.transaction() as conn:
            return conn.execute(
                sa.select(steps).where(steps.c.id == message.kwargs["step_id"])
            ).one()


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    started.clear()
    release.clear()
    failing.clear()
    yield
    for event in list(release.values()):
        event.set()  # never leave a thread waiting


@pytest.fixture
def bench(store: Store) -> Harness:
    return Harness(store)


@pytest.fixture
def clock() -> Iterator[Shifted]:
    shifted = Shifted()
    previous = install(shifted)
    yield shifted
    install(previous)


def _ids(sent: list[tuple[Message, int | None]]) -> list[str]:
    return [m.kwargs["step_id"] for m, _ in sent]


def _timer(sent: list[tuple[Message, int | None]], waiter: Message) -> Message:
    """The one fallback timer ``waiter``'s refused claim sent: a few seconds, the row's due."""
    ((timer, delay),) = sent
    assert timer.kwargs["step_id"] == waiter.kwargs["step_id"]
    assert delay is not None and FALLBACK_MS * 0.75 <= delay <= FALLBACK_MS * 1.25
    assert DUE_OPTION in timer.options
    return timer


def test_a_step_over_its_limit_waits_as_a_row_and_the_oldest_is_handed_the_slot(
    bench: Harness,
) -> None:
    a, b, c = (bench.submit(OCR, n) for n in (1, 2, 3))
    bench.start(OCR, a, 1)
    bench.deliver(OCR, b)
    timer = _timer(bench.sent(), b)
    assert timer.kwargs["key"] == "key-2" and timer.options["broker_priority"] == 2
    bench.deliver(OCR, c)
    _timer(bench.sent(), c)
    for waiter in (b, c):
        row = bench.row(waiter)
        assert (row.status, row.waits_for, row.attempts) == ("queued", "conc:ho-ocr.ocr", 0)
        assert aware(row.scheduled_at) > utcnow() + timedelta(seconds=5)
    # Another copy of a waiter's message sends nothing: its timer is armed already.
    bench.deliver(OCR, b.copy(message_id="a-copy"))
    assert bench.sent() == []

    bench.finish(1)  # a's completion hands its slot over, in the same transaction
    handed = bench.sent()
    assert _ids(handed) == [b.kwargs["step_id"]] and handed[0][1] is None
    message = handed[0][0]
    assert message.kwargs["key"] == "key-2" and message.options["broker_priority"] == 2
    row = bench.row(b)
    assert row.waits_for is None and aware(row.scheduled_at) <= utcnow()
    assert bench.row(c).waits_for == "conc:ho-ocr.ocr"  # c waits on, the younger

    release[2].set()
    bench.deliver(OCR, message)  # b claims the freed slot, and frees it in turn
    assert (bench.row(b).status, bench.row(b).attempts) == ("succeeded", 1)
    assert _ids(bench.sent()) == [c.kwargs["step_id"]]


def test_a_per_key_hand_off_goes_to_a_waiter_of_the_same_key(bench: Harness) -> None:
    a = bench.submit(TENANT, 11, tenant="t1")
    b = bench.submit(TENANT, 12, tenant="t2")
    d = bench.submit(TENANT, 14, tenant="t2")  # older than c, but of the other key
    c = bench.submit(TENANT, 13, tenant="t1")
    bench.start(TENANT, a, 11)
    bench.start(TENANT, b, 12)  # another key: a slot of its own
    bench.deliver(TENANT, d)
    bench.deliver(TENANT, c)
    assert _ids(bench.sent()) == [d.kwargs["step_id"], c.kwargs["step_id"]]  # their timers
    assert (bench.row(c).waits_for, bench.row(d).waits_for) == (
        "conc:ho-tenant.tenant:t1",
        "conc:ho-tenant.tenant:t2",
    )
    release[11].set()  # a (t1) ends: its slot goes to c, the oldest waiter of t1
    bench.threads[0].join(10)
    handed = bench.sent()
    assert _ids(handed) == [c.kwargs["step_id"]] and handed[0][1] is None
    bench.finish(12)
    assert _ids(bench.sent()) == [d.kwargs["step_id"]]


def test_a_queue_concurrency_slot_is_handed_over(bench: Harness) -> None:
    a, b = bench.submit(SCAN, 21), bench.submit(SCAN, 22)
    bench.start(SCAN, a, 21)
    bench.deliver(SCAN, b)
    _timer(bench.sent(), b)
    assert bench.row(b).waits_for == "queue:ho.scan"
    bench.finish(21)
    assert _ids(bench.sent()) == [b.kwargs["step_id"]]


def test_a_retry_hands_its_slot_over(bench: Harness) -> None:
    failing.add(31)
    a, b = bench.submit(OCR, 31), bench.submit(OCR, 32)
    bench.start(OCR, a, 31)
    bench.deliver(OCR, b)
    _timer(bench.sent(), b)
    bench.finish(31)
    assert isinstance(bench.raised.pop(31), dramatiq.Retry)  # a's own message comes back
    assert _ids(bench.sent()) == [b.kwargs["step_id"]]
    row = bench.row(a)
    assert (row.status, row.attempts, row.waits_for) == ("queued", 1, None)
    assert aware(row.scheduled_at) > utcnow()  # its backoff holds; b has the slot


def test_a_final_failure_hands_its_slot_over(bench: Harness) -> None:
    a, b = bench.submit(STRICT, 41), bench.submit(STRICT, 42)
    bench.start(STRICT, a, 41)
    bench.deliver(STRICT, b)
    _timer(bench.sent(), b)
    bench.finish(41)
    assert isinstance(bench.raised.pop(41), StepFailed)
    assert bench.store.run_state(a.kwargs["run_id"])[0] == RunStatus.FAILED  # type: ignore[index]
    assert _ids(bench.sent()) == [b.kwargs["step_id"]]


def test_a_fallback_that_finds_the_slot_taken_waits_again(bench: Harness, clock: Shifted) -> None:
    a, b = bench.submit(OCR, 51), bench.submit(OCR, 52)
    bench.start(OCR, a, 51)
    bench.deliver(OCR, b)
    timer = _timer(bench.sent(), b)
    first_due = aware(bench.row(b).scheduled_at)
    clock.ahead = timedelta(milliseconds=FALLBACK_MS * 1.3)  # the timer fires; a still runs
    bench.deliver(OCR, timer)
    again = _timer(bench.sent(), b)
    row = bench.row(b)
    assert row.status == "queued" and row.waits_for == "conc:ho-ocr.ocr"
    assert aware(row.scheduled_at) > first_due
    assert again.options[DUE_OPTION] > timer.options[DUE_OPTION]


def test_a_hand_off_to_a_cancelled_run_is_recovered_by_the_next_waiters_fallback(
    bench: Harness, clock: Shifted
) -> None:
    a, b, c = (bench.submit(OCR, n) for n in (61, 62, 63))
    bench.start(OCR, a, 61)
    bench.deliver(OCR, b)
    bench.deliver(OCR, c)
    c_timer = _timer(bench.sent()[1:], c)
    bench.finish(61)
    (handed,) = bench.sent()  # to b, whose run is cancelled before its message arrives
    assert bench.engine.cancel(b.kwargs["run_id"])
    bench.deliver(OCR, handed[0])
    assert bench.row(b).status == "cancelled" and bench.sent() == []
    assert bench.row(c).waits_for is not None  # the slot is free, and nobody was told

    clock.ahead = timedelta(milliseconds=FALLBACK_MS * 1.3)
    release[63].set()
    bench.deliver(OCR, c_timer)  # c's fallback timer claims the free slot
    assert (bench.row(c).status, bench.row(c).attempts) == ("succeeded", 1)


def test_a_hand_off_that_could_not_be_published_is_recovered_by_the_fallback(
    bench: Harness, clock: Shifted
) -> None:
    a, b = bench.submit(OCR, 71), bench.submit(OCR, 72)
    bench.start(OCR, a, 71)
    bench.deliver(OCR, b)
    timer = _timer(bench.sent(), b)
    bench.publisher.lose_next = True
    bench.finish(71)
    assert 71 not in bench.raised  # the completion stands: a lost hand-off is no failure
    assert bench.row(a).status == "succeeded" and bench.sent() == []
    row = bench.row(b)  # made due by the hand-off, its message lost
    assert row.waits_for is None and aware(row.scheduled_at) <= utcnow()

    clock.ahead = timedelta(milliseconds=FALLBACK_MS * 1.3)
    release[72].set()
    bench.deliver(OCR, timer)
    assert (bench.row(b).status, bench.row(b).attempts) == ("succeeded", 1)


def test_a_copy_for_a_waiting_step_takes_a_free_slot_at_once(bench: Harness) -> None:
    a, b = bench.submit(OCR, 81), bench.submit(OCR, 82)
    bench.start(OCR, a, 81)
    bench.deliver(OCR, b)
    _timer(bench.sent(), b)
    # a's slot freed without a hand-off reaching b (a step that held no Handoff)
    with bench.store.db.transaction() as conn:
        conn.execute(
            steps.update()
            .where(steps.c.id == a.kwargs["step_id"])
            .values(status=StepStatus.SUCCEEDED.value)
        )
    release[82].set()
    bench.deliver(OCR, b.copy(message_id="early-copy"))  # before b's fallback is due
    assert (bench.row(b).status, bench.row(b).waits_for) == ("succeeded", None)
    bench.finish(81)
