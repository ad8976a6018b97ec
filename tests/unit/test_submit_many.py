"""``submit_many``: many runs of one flow, validated first, stored in one transaction.

On the embedded default (memory broker + SQLite) for what a caller sees, on an Engine
built by hand (SQLite and the in-memory publisher) for what is sent, and on both
databases for the rows, which must be those ``submit`` makes for one run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import sqlalchemy as sa
from pydantic import BaseModel, Field

import flowkit
from flowkit.payloads import PayloadLimits
from flowkit.runtime.engine import Engine
from flowkit.runtime.publisher import MemoryPublisher, Outgoing, RunRef
from flowkit.store import Store
from flowkit.store.db import aware
from flowkit.store.schema import runs, steps
from flowkit.testing import embedded


class Order(BaseModel):
    tenant_id: str
    amount: int = Field(ge=0)


class Go(BaseModel):
    ok: bool


@flowkit.stage(queue="sm.price")
def price(order: Order) -> int:
    return order.amount * 2


@flowkit.stage(queue="sm.total")
def total(n: int) -> str:
    return f"= {n}"


orders = flowkit.Pipeline("sm-orders", [price, total])
app = flowkit.App("sm", flows=[orders])

#: Every kind of first row: a queued entry, an entry waiting for a signal with a
#: timeout, a join of both, and the run's deadline.
shape = flowkit.Workflow("sm-shape", timeout="1h")


@shape.step(queue="sm.first")
def first(order: Order) -> int:
    return order.amount


@shape.step(queue="sm.gate", wait_for="go", timeout="1m")
def gate(order: Order, go: Go | flowkit.TimedOut) -> int:
    return 1


@shape.step(after=[first, gate], queue="sm.join")
def both(first: int, gate: int) -> int:
    return first + gate


def order(i: int) -> dict[str, Any]:
    return {"tenant_id": f"t{i}", "amount": i}


@pytest.fixture
def embedded_app(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(app, tmp_path) as a:
        yield a


# -- what a caller sees (embedded) ------------------------------------------------------
def test_every_bad_input_is_listed_and_nothing_is_stored(embedded_app: flowkit.App) -> None:
    inputs = [order(0), {"tenant_id": "b", "amount": -1}, {"amount": 2}, order(3), "nope"]
    with pytest.raises(flowkit.InputValidationError) as info:
        orders.submit_many(inputs, keys=[f"k{i}" for i in range(5)])
    err = info.value
    assert err.stage == "price"
    assert [(e["loc"], e["type"]) for e in err.errors] == [
        ([1, "amount"], "greater_than_equal"),
        ([2, "tenant_id"], "missing"),
        ([4], "model_type"),
    ]
    message = str(err)
    assert message.startswith("3 of 5 inputs for 'sm-orders' do not match stage 'price'")
    assert "nothing was stored or sent" in message
    assert "input 1: amount: Input should be greater than or equal to 0" in message
    assert "input 2: tenant_id: Field required" in message and "input 4: (root): " in message
    assert "input 0" not in message and "input 3" not in message
    assert embedded_app.runs() == []
    # Nothing of the refused batch holds its keys.
    again = orders.submit_many([inputs[0], inputs[3]], keys=["k0", "k3"])
    assert [r.created for r in again] == [True, True]


def test_keys_make_batches_idempotent_and_a_mixed_batch_creates_only_new_keys(
    embedded_app: flowkit.App,
) -> None:
    first_batch = orders.submit_many([order(i) for i in range(3)], keys=["a", "b", "c"])
    assert [r.created for r in first_batch] == [True, True, True]
    assert len({r.id for r in first_batch}) == 3
    keys = ["b", "x", "a", "c", "y"]
    mixed = orders.submit_many([order(10 + i) for i in range(5)], keys=keys)
    assert [r.created for r in mixed] == [False, True, False, False, True]
    a, b, c = first_batch
    assert [mixed[0].id, mixed[2].id, mixed[3].id] == [b.id, a.id, c.id]
    # A known key's run keeps its first input: "b" was order(1), not order(10).
    assert [r.result(timeout=30) for r in mixed] == ["= 2", "= 22", "= 0", "= 4", "= 28"]
    stored = embedded_app.runs(limit=100)
    assert len(stored) == 5  # each key names one run
    assert {r.key: r.id for r in stored} == {k: r.id for k, r in zip(keys, mixed, strict=True)}
    assert {r.status for r in stored} == {flowkit.RunStatus.SUCCEEDED}


def test_a_key_given_twice_in_one_batch_is_refused(embedded_app: flowkit.App) -> None:
    with pytest.raises(
        flowkit.ConfigurationError,
        match=r"key 'dup' is given twice in one batch \(keys\[0\] and keys\[2\]\)",
    ):
        orders.submit_many([order(0), order(1), order(2)], keys=["dup", "other", "dup"])
    with pytest.raises(flowkit.ConfigurationError, match=r"keys has 2 key\(s\) for 3 input\(s\)"):
        orders.submit_many([order(0), order(1), order(2)], keys=["a", "b"])
    with pytest.raises(flowkit.ConfigurationError, match=r"keys\[1\]: key must be a non-empty"):
        orders.submit_many([order(0), order(1)], keys=["a", ""])
    with pytest.raises(flowkit.ConfigurationError, match="not a string"):
        orders.submit_many([order(0), order(1)], keys="ab")
    with pytest.raises(flowkit.ConfigurationError, match="max_priority"):
        orders.submit_many([order(0)], priority=3)  # the App has no priorities
    assert embedded_app.runs() == []


def test_every_run_of_a_batch_completes_in_input_order(embedded_app: flowkit.App) -> None:
    batch = embedded_app.submit_many("sm-orders", [order(i) for i in range(200)])
    assert len({r.id for r in batch}) == 200 and all(r.created for r in batch)
    assert [r.result(timeout=60) for r in batch] == [f"= {2 * i}" for i in range(200)]
    assert orders.submit_many([]) == []


# -- what is sent (an Engine on SQLite and the in-memory publisher) ---------------------
class FlakyPublisher(MemoryPublisher):
    """Refuses the first ``fail`` batches after the commit, as RabbitMQ gone away would."""

    def __init__(self, fail: int = 0, down: bool = False) -> None:
        super().__init__()
        self.fail, self.down = fail, down

    def ready(self) -> None:
        if self.down:
            raise flowkit.BrokerError("RabbitMQ at amqp://localhost is unreachable")

    def publish_many(self, items: Sequence[tuple[RunRef, Outgoing]]) -> None:
        if self.fail:
            self.fail -= 1
            try:
                raise ConnectionResetError("connection reset by peer")
            except ConnectionResetError as exc:
                raise flowkit.BrokerError(f"{len(items)} step message(s) lost") from exc
        super().publish_many(items)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'many.db'}", pool_size=2)
    s.ensure_schema()
    yield s
    s.dispose()


def _sent(publisher: MemoryPublisher) -> list[tuple[str, str, str | None]]:
    return [(m.actor_name, m.kwargs["run_id"], m.kwargs["key"]) for m in publisher.take()]


def test_one_batch_of_messages_and_known_keys_publish_their_queued_entry_again(
    sqlite_store: Store,
) -> None:
    publisher = MemoryPublisher()
    graph = orders.compile()
    engine = Engine([graph], sqlite_store, publisher)
    made = engine.submit_many(graph, [order(i) for i in range(3)], keys=["a", "b", "c"])
    ids = [run_id for run_id, _ in made]
    assert _sent(publisher) == [("sm-orders.price", r, k) for r, k in zip(ids, "abc", strict=True)]
    # No worker ran them: the known keys' entry steps are still queued, and go out again
    # (what submit does for a known key), beside the new run's.
    again = engine.submit_many(graph, [order(7), order(8)], keys=["c", "d"])
    assert again[0] == (made[2][0], False) and again[1][1] is True
    assert _sent(publisher) == [
        ("sm-orders.price", made[2][0], "c"),
        ("sm-orders.price", again[1][0], "d"),
    ]
    steps_of_c = sqlite_store.get_steps(made[2][0])
    assert [(s.name, s.status.value) for s in steps_of_c] == [("price", "queued")]


def test_the_broker_is_checked_before_anything_is_stored(sqlite_store: Store) -> None:
    publisher = FlakyPublisher(down=True)
    engine = Engine([orders.compile()], sqlite_store, publisher)
    with pytest.raises(flowkit.BrokerError, match="unreachable"):
        engine.submit_many(orders.compile(), [order(1)], keys=["a"])
    assert sqlite_store.list_runs(limit=10) == [] and publisher.sent == []


def test_refused_inputs_send_nothing_and_a_payload_over_the_limit_is_listed(
    sqlite_store: Store,
) -> None:
    publisher = MemoryPublisher()
    engine = Engine([orders.compile()], sqlite_store, publisher, limits=PayloadLimits(200))
    huge = {"tenant_id": "x" * 500, "amount": 1}
    with pytest.raises(flowkit.InputValidationError) as info:
        engine.submit_many(orders.compile(), [order(1), huge, {"amount": "x"}])
    assert [e["loc"][0] for e in info.value.errors] == [1, 2, 2]
    assert info.value.errors[0]["type"] == "payload_too_large_bytes"
    assert sqlite_store.list_runs(limit=10) == [] and publisher.sent == []


def test_a_publish_failure_after_the_commit_says_the_runs_are_stored_and_a_retry_sends_them(
    sqlite_store: Store,
) -> None:
    publisher = FlakyPublisher(fail=1)
    graph = orders.compile()
    engine = Engine([graph], sqlite_store, publisher)
    with pytest.raises(flowkit.BrokerError) as info:
        engine.submit_many(graph, [order(i) for i in range(3)], keys=["a", "b", "c"])
    message = str(info.value)
    assert "3 new run(s) of 'sm-orders' are stored" in message
    assert "RabbitMQ at memory:// closed" in message and "recovery sweep" in message
    stored = sqlite_store.list_runs(limit=10)
    assert len(stored) == 3 and publisher.sent == []
    retried = engine.submit_many(graph, [order(i) for i in range(3)], keys=["a", "b", "c"])
    assert [created for _, created in retried] == [False, False, False]
    assert {r for r, _ in retried} == {r.id for r in stored}
    sent = publisher.take()
    queued = {s.id for r, _ in retried for s in sqlite_store.get_steps(r)}
    assert {m.kwargs["step_id"] for m in sent} == queued and len(sent) == 3


def test_one_span_covers_a_batch_and_each_run_keeps_its_context(sqlite_store: Store) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from otel_support import recording, span_id, trace_id

    publisher = MemoryPublisher()
    graph = orders.compile()
    engine = Engine([graph], sqlite_store, publisher)
    with recording() as rec:
        made = engine.submit_many(graph, [order(1), order(2)], keys=["a", "b"])
        span = rec.one("flowkit.submit_many sm-orders")
    assert span.attributes is not None
    assert (span.attributes["flowkit.runs"], span.attributes["flowkit.created"]) == (2, 2)
    sent = publisher.take()
    assert [m.kwargs["run_id"] for m in sent] == [run_id for run_id, _ in made]
    for message in sent:
        info = sqlite_store.get_run(message.kwargs["run_id"])
        assert info is not None and info.trace_context == message.options["flowkit_trace"]
        assert f"{trace_id(span):032x}-{span_id(span):016x}" in info.trace_context["traceparent"]


# -- the rows: those submit makes, on SQLite and PostgreSQL ------------------------------
def _rows(store: Store, run_id: str) -> tuple[Any, list[Any]]:
    with store.db.transaction() as conn:
        run = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()
        rows = conn.execute(sa.select(steps).where(steps.c.run_id == run_id)).all()
    created = aware(run.created_at)
    assert created is not None

    def since(at: Any) -> timedelta | None:
        value = aware(at)
        return None if value is None else value - created

    run_doc = (run.flow, run.status, run.input, run.priority, since(run.deadline_at))
    step_docs = sorted(
        (s.name, s.status, s.queue, s.item, s.attempts, s.input, s.pending, since(s.scheduled_at))
        for s in rows
    )
    return run_doc, step_docs


def _messages(publisher: MemoryPublisher, run_id: str) -> list[tuple[str, int]]:
    """``(actor, delay in whole minutes)`` of the run's messages sent so far."""
    return sorted(
        (m.actor_name, round((d or 0) / 60_000))
        for m, d in publisher.sent
        if m.kwargs["run_id"] == run_id
    )


def _close(a: tuple[Any, list[Any]], b: tuple[Any, list[Any]]) -> bool:
    """The same rows, times within a second (two submits are not the same instant)."""

    def rounded(doc: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(round(v.total_seconds()) if isinstance(v, timedelta) else v for v in doc)

    return rounded(a[0]) == rounded(b[0]) and [rounded(s) for s in a[1]] == [
        rounded(s) for s in b[1]
    ]


def test_a_batch_stores_the_rows_submit_stores_for_one_run(store: Store) -> None:
    publisher = MemoryPublisher()
    graph = shape.compile()
    engine = Engine([graph], store, publisher)
    one, _ = engine.submit(graph, order(5), key="one", priority=None)
    many = engine.submit_many(graph, [order(5), order(5)], keys=["m1", "m2"])
    expected = _rows(store, one)
    assert expected[0][1] == "waiting" and expected[0][4] == timedelta(hours=1)
    assert [(s[0], s[1], s[6]) for s in expected[1]] == [
        ("both", "waiting", 2),
        ("first", "queued", None),
        ("gate", "waiting", 1),
    ]
    for run_id, created in many:
        assert created
        assert _close(_rows(store, run_id), expected), (_rows(store, run_id), expected)
        # Its entry step, the signal wait's timer, and the run's deadline.
        assert _messages(publisher, run_id) == _messages(publisher, one)
    assert _messages(publisher, one) == [
        ("flowkit.control", 10),  # the deadline's first hop (timer_hop)
        ("sm-shape.first", 0),
        ("sm-shape.gate", 1),
    ]
    assert all(isinstance(m, dramatiq.Message) for m, _ in publisher.sent)


def test_two_batches_sharing_keys_at_once_make_one_run_per_key(store: Store) -> None:
    graph = orders.compile()
    engine = Engine([graph], store, MemoryPublisher())
    keys = [f"k{i:03d}" for i in range(200)]
    orders_of = {"up": [*keys, "only-up"], "down": [*reversed(keys), "only-down"]}
    barrier = threading.Barrier(2)
    got: dict[str, list[tuple[str, bool]]] = {}
    errors: list[BaseException] = []

    def submit(name: str) -> None:
        batch = orders_of[name]
        barrier.wait()
        try:
            got[name] = engine.submit_many(graph, [order(1)] * len(batch), keys=batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(name,)) for name in orders_of]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    up = dict(zip(orders_of["up"], got["up"], strict=True))
    down = dict(zip(orders_of["down"], got["down"], strict=True))
    assert all(up[k][0] == down[k][0] for k in keys)  # both calls name one run per key
    assert all(up[k][1] != down[k][1] for k in keys)  # and exactly one of them created it
    assert len(store.list_runs(limit=500)) == len(keys) + 2
