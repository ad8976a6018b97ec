"""``async def`` steps on the memory broker: they run on the process's event loop, hold
no worker thread while they await, and keep a sync step's options, Context, timeouts,
retries and failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_server import FakeOpenAI, Reply, openai_server  # noqa: F401 - fixture
from pydantic import BaseModel

import flowkit
from flowkit import llm
from flowkit.errors import ConfigurationError, FlowDefinitionError, RunFailed
from flowkit.runtime import aio
from flowkit.testing import embedded, run_to_completion

#: set by the test that holds many coroutines awaiting at once
released = threading.Event()
#: set when the timed-out coroutine sees its cancellation
cancelled_seen = threading.Event()
seen: dict[str, Any] = {}


class Order(BaseModel):
    id: int
    fail_times: int = 0


class Priced(BaseModel):
    id: int
    price: float
    attempt: int = 1


@flowkit.stage
def receive(n: int) -> Order:
    return Order(id=n)


async def _price(order: Order, ctx: flowkit.Context) -> Priced:
    await asyncio.sleep(0.01)
    if ctx.attempt <= order.fail_times:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    seen["run_id"] = ctx.run_id
    seen["cancelled"] = await ctx.acancelled()
    seen["thread"] = threading.current_thread().name
    return Priced(id=order.id, price=order.id * 1.5, attempt=ctx.attempt)


price = flowkit.stage(retries=2, min_backoff="1ms", max_backoff="5ms")(_price)
price_again = flowkit.stage(name="price", retries=2, min_backoff="1ms", max_backoff="5ms")(_price)


@flowkit.stage
def label(p: Priced) -> str:
    return f"order {p.id}: {p.price:.2f} (attempt {p.attempt})"


mixed = flowkit.Pipeline("aio-mixed", [receive, price, label])


@flowkit.stage(name="label")
def label_again(p: Priced) -> str:
    return f"order {p.id}: {p.price:.2f} (attempt {p.attempt})"


retrying = flowkit.Pipeline("aio-retry", [price_again, label_again])


@flowkit.stage(timeout="200ms", retries=0)
async def slow(n: int) -> int:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled_seen.set()
        raise
    return n


timing_out = flowkit.Pipeline("aio-timeout", [slow])


@flowkit.stage(retries=0)
async def broken(n: int) -> int:
    await asyncio.sleep(0)
    raise ValueError(f"bad value {n}")


failing = flowkit.Pipeline("aio-fail", [broken])


@flowkit.stage
async def held(n: int) -> int:
    while not released.is_set():  # the test releases them once all are in flight
        await asyncio.sleep(0.005)
    return n * 2


holding = flowkit.Pipeline("aio-held", [held])


@flowkit.stage
async def stops(n: int) -> int:
    if n < 0:
        return flowkit.Stop(output="negative", reason="nothing to do")  # type: ignore[return-value]
    return n


@flowkit.stage
def never(n: int) -> int:
    raise AssertionError("skipped by Stop")


stopping = flowkit.Pipeline("aio-stop", [stops, never])


wf = flowkit.Workflow("aio-wf")


@wf.step
def split(n: int) -> list[int]:
    return list(range(n))


@wf.step(after=split, each=True)
async def each(i: int) -> int:
    await asyncio.sleep(0.001)
    return i * i


@wf.step(after=each)
def total(squares: list[int]) -> int:
    return sum(squares)


@flowkit.stage
async def watch(n: int, ctx: flowkit.Context) -> int:
    while not await ctx.acancelled():  # the store is read in a thread, off the loop
        await asyncio.sleep(0.02)
    seen["saw_cancel"] = True
    return n


watching = flowkit.Pipeline("aio-watch", [watch])

app = flowkit.App(
    "aio", flows=[mixed, retrying, timing_out, failing, holding, stopping, wf, watching]
)


class Criteria(BaseModel):
    min_credit_score: int
    industries: list[str]


@flowkit.stage(retries=2, min_backoff="1ms", max_backoff="5ms")
async def extract(text: str, ctx: flowkit.Context) -> Criteria:
    return await llm.astructured(Criteria, f"Extract: {text}", ctx=ctx)


@flowkit.stage(retries=2, min_backoff="1ms", max_backoff="5ms")
async def summarize(c: Criteria, ctx: flowkit.Context) -> str:
    return await llm.acomplete(f"One line about {c.model_dump_json()}", ctx=ctx)


llm_app = flowkit.App(
    "aio-llm",
    flows=[flowkit.Pipeline("aio-llm", [extract, summarize])],
    llm_model="test-model",
    llm_prices={"test-model": (1.0, 2.0)},
)
GOOD = '{"min_credit_score": 680, "industries": ["retail"]}'


def wait_until(check: Callable[[], bool], *, timeout: float) -> None:
    """Poll ``check`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout}s"
        threading.Event().wait(0.01)


@pytest.fixture
def aio_app(tmp_path: Path) -> Iterator[flowkit.App]:
    seen.clear()
    released.clear()
    cancelled_seen.clear()
    with embedded(app, tmp_path, threads=2) as a:
        yield a


def test_an_async_stage_runs_and_its_output_flows_on(aio_app: flowkit.App) -> None:
    run = mixed.submit(7)
    assert run_to_completion(run, timeout=20) == "order 7: 10.50 (attempt 1)"
    assert [s.status.value for s in run.steps()] == ["succeeded"] * 3
    # the coroutine ran on the loop thread, with its Context
    assert seen == {"run_id": run.id, "cancelled": False, "thread": "flowkit-async-loop"}


def test_a_failing_attempt_is_retried_like_a_sync_one(aio_app: flowkit.App) -> None:
    run = retrying.submit(Order(id=2, fail_times=2))
    assert run_to_completion(run, timeout=20) == "order 2: 3.00 (attempt 3)"
    first = run.steps()[0]
    assert first.attempts == 3


def test_stop_from_an_async_step_ends_the_run(aio_app: flowkit.App) -> None:
    run = stopping.submit(-1)
    assert run_to_completion(run, timeout=20) == "negative"
    assert [s.status.value for s in run.steps()] == ["succeeded", "skipped"]


def test_a_timeout_cancels_the_coroutine_and_fails_the_step(aio_app: flowkit.App) -> None:
    run = timing_out.submit(1)
    with pytest.raises(RunFailed) as err:
        run_to_completion(run, timeout=20)
    assert err.value.error_type == "StepTimeout"
    assert "timeout of 0.2s" in err.value.error_message
    assert cancelled_seen.wait(5)


def test_an_exception_fails_the_run_as_for_a_sync_step(aio_app: flowkit.App) -> None:
    run = failing.submit(5)
    with pytest.raises(RunFailed) as err:
        run_to_completion(run, timeout=20)
    assert (err.value.step, err.value.error_type) == ("broken", "ValueError")
    assert "bad value 5" in err.value.error_message


def test_awaiting_steps_hold_no_worker_thread(aio_app: flowkit.App) -> None:
    runs = [holding.submit(i) for i in range(30)]  # on 2 worker threads
    try:
        wait_until(lambda: aio.in_flight() >= 30, timeout=20)
    finally:
        released.set()
    assert run_to_completion(*runs, timeout=20) == [i * 2 for i in range(30)]


def test_async_items_of_a_fan_out_reach_their_join(aio_app: flowkit.App) -> None:
    run = wf.submit(5)
    assert run_to_completion(run, timeout=20) == sum(i * i for i in range(5))


def test_a_coroutine_sees_its_run_cancelled_without_blocking_the_loop(
    aio_app: flowkit.App,
) -> None:
    run = watching.submit(1)
    wait_until(lambda: run.status() == flowkit.RunStatus.RUNNING, timeout=20)
    assert run.cancel()
    wait_until(lambda: seen.get("saw_cancel") is True, timeout=20)
    assert run.status() == flowkit.RunStatus.CANCELLED


def test_async_llm_calls_record_usage_and_use_the_cache(
    tmp_path: Path,
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    openai_server.script = [
        "not json",  # re-asked within the attempt
        Reply(content=GOOD, prompt_tokens=100, completion_tokens=20),
        Reply(content="Retail, 680+.", prompt_tokens=10, completion_tokens=4),
        429,  # the third run's extraction: a step retry, then the answer
        '{"min_credit_score": 700, "industries": []}',
        "Anything, 700+.",
    ]
    flow = llm_app.flow("aio-llm")
    with embedded(llm_app, tmp_path, threads=2):
        first = flow.submit("credit 680+, retail")
        assert run_to_completion(first, timeout=20) == "Retail, 680+."
        extracted, summarized = (s.usage for s in first.steps())
        assert extracted is not None and summarized is not None
        assert (extracted["prompt_tokens"], extracted["calls"]) == (111, 2)
        assert summarized["cost"] == pytest.approx((10 * 1.0 + 4 * 2.0) / 1_000_000)
        # The same question again: both answers come from the cache.
        second = flow.submit("credit 680+, retail", key="again")
        assert run_to_completion(second, timeout=20) == "Retail, 680+."
        assert all((s.usage or {}).get("cached_calls") == 1 for s in second.steps())
        assert len(openai_server.requests) == 3
        third = flow.submit("credit 700+")
        assert run_to_completion(third, timeout=20) == "Anything, 700+."
        assert third.steps()[0].attempts == 2  # the 429 was a step retry
    assert len(openai_server.requests) == 6
    assert openai_server.requests[0]["response_format"]["type"] == "json_schema"


def test_the_decorator_still_checks_an_async_function() -> None:
    async def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(FlowDefinitionError, match="annotate the input parameter"):
        flowkit.stage(untyped)

    async def no_return(x: int):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(FlowDefinitionError, match="annotate the return type"):
        flowkit.stage(no_return)

    async def wrong_ctx(x: int, ctx: int) -> int:
        return x

    with pytest.raises(FlowDefinitionError, match=r"must be a flowkit\.Context"):
        flowkit.stage(wrong_ctx)
    assert price.is_async and not receive.is_async
    assert price.output_type is Priced  # the awaited type, not a coroutine
    with pytest.raises(FlowDefinitionError):
        flowkit.Pipeline("aio-bad", [price_again, receive])  # Priced into an int


def test_a_bad_async_limit_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_ASYNC_LIMIT", "0")
    with pytest.raises(ConfigurationError, match="FLOWKIT_ASYNC_LIMIT"):
        aio.limit_from_env()
    monkeypatch.setenv("FLOWKIT_ASYNC_LIMIT", "12")
    assert aio.limit_from_env() == 12
