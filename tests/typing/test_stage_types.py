"""What type checkers see of declared stages and steps; mypy checks this file.

``[tool.mypy] files`` includes ``tests/typing``, so a wrong type here fails the
type check. At run time ``assert_type`` returns its argument: the tests below
also run under pytest, as plain checks that the declarations work.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel
from typing_extensions import assert_type

import flowkit
from flowkit.testing import VirtualClock


class Order(BaseModel):
    amount: int


class Priced(BaseModel):
    amount: int
    total: float


class Item(BaseModel):
    n: int


class Approval(BaseModel):
    ok: bool


# -- flowkit.stage -------------------------------------------------------------------
@flowkit.stage
def price(order: Order) -> Priced:
    return Priced(amount=order.amount, total=order.amount * 1.2)


@flowkit.stage
def price_ctx(order: Order, ctx: flowkit.Context) -> Priced:
    return Priced(amount=order.amount, total=float(order.amount))


@flowkit.stage(queue="billing", retries=5, timeout="30s")
def check(priced: Priced) -> Priced | flowkit.Stop:
    return priced if priced.total > 0 else flowkit.Stop(reason="free")


@flowkit.stage(name="receipt", min_backoff="10ms")
def receipt(priced: Priced, ctx: flowkit.Context) -> str:
    return f"{priced.total:.2f}"


def test_flowkit_stage_gives_the_input_and_output_types() -> None:
    assert_type(price, flowkit.Stage[Order, Priced])
    assert_type(price_ctx, flowkit.Stage[Order, Priced])
    assert_type(check, flowkit.Stage[Priced, Priced | flowkit.Stop])
    assert_type(receipt, flowkit.Stage[Priced, str])
    # Calling a stage calls the function: its return type is the stage's output type.
    assert_type(price(Order(amount=10)), Priced)
    assert price.input_type is Order and price.output_type is Priced
    assert receipt.takes_context and receipt.retries == 3 and receipt.min_backoff_ms == 10


def test_a_pipeline_takes_stages_of_any_types() -> None:
    pipeline = flowkit.Pipeline("typing-orders", [price, check, receipt])
    assert_type(pipeline.compile().entry, flowkit.Stage[Any, Any])
    assert pipeline.compile().order() == ["price", "check", "receipt"]


# An async def step: the output type is what the coroutine returns.
@flowkit.stage
async def price_async(order: Order) -> Priced:
    return Priced(amount=order.amount, total=order.amount * 1.2)


@flowkit.stage(retries=2, timeout="10s")
async def receipt_async(priced: Priced, ctx: flowkit.Context) -> str:
    return f"{priced.total:.2f}"


async_flow = flowkit.Workflow("typing-async")


@async_flow.step
async def split_async(order: Order) -> list[Item]:
    return [Item(n=i) for i in range(order.amount)]


def test_async_stages_give_the_awaited_output_type() -> None:
    assert_type(price_async, flowkit.Stage[Order, Priced])
    assert_type(receipt_async, flowkit.Stage[Priced, str])
    assert_type(split_async, flowkit.Stage[Order, list[Item]])
    assert price_async.is_async and price_async.output_type is Priced
    assert receipt_async.takes_context and receipt_async.retries == 2


# -- Workflow.step -------------------------------------------------------------------
flow = flowkit.Workflow("typing-flow")


@flow.step
def split(order: Order) -> list[Item]:
    return [Item(n=i) for i in range(order.amount)]


@flow.step(after=split, each=True, retries=1)
def work(item: Item, ctx: flowkit.Context) -> int:
    return item.n


@flow.step(after=work)
def total(ns: list[int]) -> int:
    return sum(ns)


# Several parents and signal waits take several inputs: they stay Stage[Any, Any].
@flow.step(after=[split, total])
def report(split: list[Item], total: int) -> str:
    return f"{len(split)} items, {total}"


@flow.step(after=report, wait_for="approval", timeout="1h")
def approve(text: str, approval: Approval) -> bool:
    return approval.ok


def test_workflow_step_gives_the_input_and_output_types() -> None:
    assert_type(split, flowkit.Stage[Order, list[Item]])
    assert_type(work, flowkit.Stage[Item, int])
    assert_type(total, flowkit.Stage[list[int], int])
    assert_type(report, flowkit.Stage[Any, Any])
    assert_type(approve, flowkit.Stage[Any, Any])
    assert_type(total([1, 2]), int)
    assert approve.wait_timeout_ms == 3_600_000 and approve.timeout_ms is None
    assert flow.compile().sinks() == ["approve"]


# A wait that handles its own timeout: the payload parameter names flowkit.TimedOut.
waits = flowkit.Workflow("typed-waits")


@waits.step(wait_for="approval", timeout="30s")
def decide(order: Order, approval: Approval | flowkit.TimedOut) -> str:
    if isinstance(approval, flowkit.TimedOut):
        assert_type(approval, flowkit.TimedOut)
        assert_type(approval.waited, timedelta)
        return f"no answer to {approval.signal} within {approval.waited}"
    assert_type(approval, Approval)
    return "ok" if approval.ok else "no"


def test_a_wait_may_take_timed_out() -> None:
    assert_type(decide, flowkit.Stage[Any, Any])
    assert decide.signal_type is Approval and decide.runs_on_timeout
    gone = flowkit.TimedOut(signal="approval", waited=timedelta(seconds=30))
    assert decide(Order(amount=1), gone) == "no answer to approval within 0:00:30"


def test_the_virtual_clock_is_typed() -> None:
    clock = VirtualClock()
    assert_type(clock.advance(timedelta(seconds=1), minutes=2), datetime)
    assert_type(clock.pending, list[datetime])
    assert_type(clock.ahead, timedelta)
    assert clock.ahead == timedelta(minutes=2, seconds=1)


def test_options_are_typed_keywords() -> None:
    # mypy rejects these (the ignores are checked: warn_unused_ignores), Python too.
    with pytest.raises(flowkit.ConfigurationError, match="retries must be an integer"):
        flowkit.stage(retries="3")(price.fn)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword argument 'retry'"):
        flowkit.stage(retry=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword argument 'wait_for'"):
        flowkit.stage(wait_for="approval")  # type: ignore[call-overload]


if TYPE_CHECKING:
    # A stage's options cannot be changed once declared.
    price.retries = 5  # type: ignore[assignment]
