"""The runtime protocol on the embedded default (memory broker + SQLite)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from pydantic import BaseModel

import flowkit
from flowkit.runtime.publisher import Outgoing, RunRef
from flowkit.store import NewStep, Outcome
from flowkit.testing import drain, embedded, run_to_completion


class Order(BaseModel):
    tenant_id: str
    amount: int


class Priced(BaseModel):
    tenant_id: str
    amount: int
    total: int


class Receipt(BaseModel):
    tenant_id: str
    total: int
    note: str


calls: Counter[str] = Counter()
_work = threading.Event()  # never set: its wait is simulated work
contexts: list[flowkit.Context] = []
_lock = threading.Lock()


def _count(name: str) -> int:
    with _lock:
        calls[name] += 1
        return calls[name]


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    contexts.clear()


@flowkit.stage(queue="price")
def price(order: Order, ctx: flowkit.Context) -> Priced | flowkit.Stop:
    _count("price")
    contexts.append(ctx)
    if order.amount == 0:
        return flowkit.Stop(output={"skipped": order.tenant_id}, reason="nothing to price")
    if order.amount < 0:
        return "not a Priced"  # type: ignore[return-value]
    return Priced(tenant_id=order.tenant_id, amount=order.amount, total=order.amount * 2)


@flowkit.stage(queue="receipt", retries=2, min_backoff="1ms", max_backoff="5ms")
def receipt(p: Priced) -> Receipt:
    n = _count(f"receipt:{p.tenant_id}")
    if p.tenant_id == "flaky" and n < 3:
        raise ConnectionError(f"flaky attempt {n}")
    if p.tenant_id == "broken":
        raise ValueError("the receipt printer is on fire")
    if p.tenant_id == "refused":
        raise flowkit.PermanentError("the customer said no")
    if p.tenant_id == "slow":
        for _ in range(300):  # simulated work that outlasts the timeout
            _work.wait(0.01)
    return Receipt(tenant_id=p.tenant_id, total=p.total, note="ok")


@flowkit.stage(queue="receipt", name="receipt", retries=0, timeout="100ms")
def slow_receipt(p: Priced) -> Receipt:
    _count("slow")
    for _ in range(300):  # simulated work that outlasts the timeout
        _work.wait(0.01)
    return Receipt(tenant_id=p.tenant_id, total=p.total, note="late")


pipeline = flowkit.Pipeline("orders", [price, receipt])
app = flowkit.App("orders", flows=[pipeline])
slow_pipeline = flowkit.Pipeline("slow-orders", [price, slow_receipt])


@pytest.fixture
def orders(tmp_path: Path) -> Iterator[flowkit.App]:
    with embedded(pipeline, tmp_path) as a:
        yield a


def test_submit_runs_every_stage_and_returns_the_typed_result(orders: flowkit.App) -> None:
    run = pipeline.submit(Order(tenant_id="t1", amount=21), key="t1:o1")
    result = run.result(timeout=10)
    assert result == Receipt(tenant_id="t1", total=42, note="ok")
    assert run.status() is flowkit.RunStatus.SUCCEEDED
    steps = run.steps()
    assert [(s.name, s.status, s.attempts) for s in steps] == [
        ("price", flowkit.StepStatus.SUCCEEDED, 1),
        ("receipt", flowkit.StepStatus.SUCCEEDED, 1),
    ]
    assert steps[0].output == {"tenant_id": "t1", "amount": 21, "total": 42}
    assert all(s.duration is not None and s.duration >= 0 for s in steps)
    info = run.info()
    assert info.key == "t1:o1"
    assert info.started_at is not None and info.finished_at is not None


def test_context_describes_the_step(orders: flowkit.App) -> None:
    run = pipeline.submit({"tenant_id": "t9", "amount": 1}, key="k9")
    run.result(timeout=10)
    (ctx,) = contexts
    assert ctx.run_id == run.id
    assert ctx.flow == "orders"
    assert ctx.step == "price"
    assert ctx.attempt == 1
    assert ctx.idempotency_key == f"{run.id}:price"
    assert ctx.key == "k9"
    assert ctx.tenant_id == "t9"


def test_a_second_submit_with_the_same_key_returns_the_same_run(orders: flowkit.App) -> None:
    first = pipeline.submit({"tenant_id": "t1", "amount": 5}, key="same")
    second = pipeline.submit({"tenant_id": "t1", "amount": 7}, key="same")
    assert first.created and not second.created
    assert second.id == first.id
    assert run_to_completion(first, second) == [second.result(), first.result()]
    assert calls["price"] == 1
    assert len(orders.runs()) == 1


def test_invalid_input_is_rejected_and_nothing_is_stored(orders: flowkit.App) -> None:
    with pytest.raises(flowkit.InputValidationError) as info:
        pipeline.submit({"tenant_id": "t1", "amount": "lots"})
    assert info.value.stage == "price"
    assert info.value.errors[0]["loc"] == ["amount"]
    assert "amount" in str(info.value)
    assert orders.runs() == []
    assert calls["price"] == 0


def test_a_failing_step_is_retried_with_backoff_then_succeeds(orders: flowkit.App) -> None:
    run = pipeline.submit({"tenant_id": "flaky", "amount": 1})
    assert run.result(timeout=10).total == 2
    step = run.steps()[1]
    assert step.attempts == 3
    assert step.error is None
    assert calls["receipt:flaky"] == 3


def test_a_step_failing_past_its_retries_fails_the_run_with_the_error(
    orders: flowkit.App,
) -> None:
    run = pipeline.submit({"tenant_id": "broken", "amount": 1})
    with pytest.raises(flowkit.RunFailed) as info:
        run.result(timeout=10)
    err = info.value
    assert err.step == "receipt"
    assert err.error_type == "ValueError"
    assert err.error_message == "the receipt printer is on fire"
    assert err.traceback is not None and "raise ValueError" in err.traceback
    assert run.status() is flowkit.RunStatus.FAILED
    _, receipt_step = run.steps()
    assert receipt_step.status is flowkit.StepStatus.FAILED
    assert receipt_step.attempts == 3  # 1 + retries=2
    assert calls["receipt:broken"] == 3
    assert run.info().error["type"] == "ValueError"  # type: ignore[index]


def test_a_permanent_error_is_not_retried(orders: flowkit.App) -> None:
    run = pipeline.submit({"tenant_id": "refused", "amount": 1})
    with pytest.raises(flowkit.RunFailed, match="the customer said no"):
        run.result(timeout=10)
    assert run.steps()[1].attempts == 1
    assert calls["receipt:refused"] == 1


def test_an_output_of_the_wrong_type_fails_at_once(orders: flowkit.App) -> None:
    run = pipeline.submit({"tenant_id": "t1", "amount": -1})
    with pytest.raises(flowkit.RunFailed, match="ValidationError"):
        run.result(timeout=10)
    assert run.steps()[0].attempts == 1
    assert calls["price"] == 1


def test_stop_ends_the_run_early_and_skips_the_rest(orders: flowkit.App) -> None:
    run = pipeline.submit({"tenant_id": "t1", "amount": 0})
    assert run.result(timeout=10) == {"skipped": "t1"}
    assert run.status() is flowkit.RunStatus.SUCCEEDED
    assert [(s.name, s.status) for s in run.steps()] == [
        ("price", flowkit.StepStatus.SUCCEEDED),
        ("receipt", flowkit.StepStatus.SKIPPED),
    ]
    assert run.steps()[0].output["reason"] == "nothing to price"
    assert run.info().stopped and run.info().stop_reason == "nothing to price"


def test_a_step_past_its_timeout_fails_with_step_timeout(tmp_path: Path) -> None:
    with embedded(slow_pipeline, tmp_path):
        run = slow_pipeline.submit({"tenant_id": "t1", "amount": 1})
        with pytest.raises(flowkit.RunFailed) as info:
            run.result(timeout=10)
    assert info.value.error_type == "StepTimeout"
    assert "timeout of 0.1s" in info.value.error_message
    assert calls["slow"] == 1


def test_result_times_out_while_the_run_is_pending(tmp_path: Path) -> None:
    with embedded(pipeline, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = pipeline.submit({"tenant_id": "t1", "amount": 1})
        with pytest.raises(flowkit.ResultTimeout, match="still pending"):
            run.result(timeout=0.05)


def test_a_duplicate_message_runs_the_step_once(tmp_path: Path) -> None:
    with embedded(pipeline, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = pipeline.submit({"tenant_id": "t1", "amount": 1})
        (step,) = run.steps()
        a.engine.publisher.publish(RunRef("orders", run.id), [Outgoing(step.id, "price", "price")])
        a.start_worker()
        run.result(timeout=10)
        drain(a)
        assert [s.name for s in run.steps()] == ["price", "receipt"]
    assert calls["price"] == 1


def test_a_redelivery_after_a_crash_between_commit_and_publish_resumes_the_run(
    tmp_path: Path,
) -> None:
    """The worker recorded the step's completion, then died before publishing."""
    with embedded(pipeline, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = pipeline.submit({"tenant_id": "t1", "amount": 1})
        (step,) = run.steps()
        store = a.store
        claim = store.runs.claim(step.id, "msg-1", lease_ms=60_000, starts_run=True)
        assert claim is not None
        nxt = NewStep(
            id="f" * 32,
            name="receipt",
            queue="receipt",
            input={"tenant_id": "t1", "amount": 1, "total": 2},
        )
        assert store.runs.complete(
            step.id, "msg-1", run.id, Outcome(output=nxt.input, inserts=[nxt])
        )
        # The broker redelivers the unacknowledged message, same id.
        a.broker.enqueue(
            dramatiq.Message(
                queue_name="price",
                actor_name="orders.price",
                args=(),
                kwargs={"step_id": step.id, "run_id": run.id, "key": None},
                options={},
                message_id="msg-1",
            )
        )
        a.start_worker()
        assert run.result(timeout=10).total == 2
    assert calls["price"] == 0  # not run again: only its successor was published


def test_recover_publishes_a_step_whose_message_was_lost(tmp_path: Path) -> None:
    with embedded(pipeline, tmp_path) as a:
        a.configure(embedded_worker=False)
        run = pipeline.submit({"tenant_id": "t1", "amount": 3})
        a.broker.flush_all()  # the message is lost
        a.start_worker()
        with pytest.raises(flowkit.ResultTimeout):
            run.result(timeout=0.05)
        assert a.recover(older_than=0, force=True) == 1
        assert run.result(timeout=10).total == 6
    assert calls["price"] == 1


def test_many_runs_complete_concurrently(orders: flowkit.App) -> None:
    runs = [pipeline.submit({"tenant_id": f"t{i}", "amount": i + 1}) for i in range(100)]
    results = run_to_completion(*runs, timeout=30)
    assert [r.total for r in results] == [2 * (i + 1) for i in range(100)]
    counts = Counter(r.status for r in orders.runs(limit=200))
    assert counts == {flowkit.RunStatus.SUCCEEDED: 100}


def test_the_pytest_fixture_embeds_an_app(flowkit_embedded) -> None:  # type: ignore[no-untyped-def]
    a = flowkit_embedded(pipeline)
    assert a.settings.embedded
    assert pipeline.submit({"tenant_id": "x", "amount": 2}).result(timeout=10).total == 4
