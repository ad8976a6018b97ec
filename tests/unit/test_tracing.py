"""OpenTelemetry on the memory broker: one trace per run, through signals, timers and redrives.

The SDK records into memory (``otel_support``); the runs are real embedded runs.
The cross-process version, with ``flowkit worker`` processes on RabbitMQ and
PostgreSQL exporting over OTLP/HTTP, is ``tests/integration/test_tracing_rabbitmq.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from openai_server import FakeOpenAI, Reply, openai_server  # noqa: F401 - fixture
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

import flowkit
from flowkit import llm
from flowkit.runtime.engine import Engine
from flowkit.runtime.publisher import MemoryPublisher
from flowkit.store import Store
from flowkit.testing import drain, embedded, wait_for_status
from otel_support import Recorded, parent_id, recording, span_id, trace_id

ROOT = Path(__file__).resolve().parents[2]


class Go(BaseModel):
    ok: bool


fan = flowkit.Workflow("tr-fan")
flaky_once = threading.Event()


@fan.step(queue="tr.work")
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True, queue="tr.work", retries=1, min_backoff="1ms", max_backoff="2ms")
def square(x: int, ctx: flowkit.Context) -> int:
    if x == 1 and ctx.attempt == 1:
        raise RuntimeError("item 1 fails its first attempt")
    return x * x


@fan.step(after=square, queue="tr.work")
def total(xs: list[int]) -> int:
    return sum(xs)


approval = flowkit.Workflow("tr-approval")


@approval.step(queue="tr.work")
def ask(n: int) -> int:
    return n


@approval.step(after=ask, wait_for="go", queue="tr.work")
def decide(n: int, go: Go) -> bool:
    return go.ok


timed = flowkit.Workflow("tr-timed")


@timed.step(queue="tr.work")
def before(n: int) -> int:
    return n


@timed.step(after=before, delay="120ms", queue="tr.work")
def after_timer(n: int) -> int:
    return n + 1


fails = flowkit.Workflow("tr-redrive")
broken = threading.Event()


@fails.step(queue="tr.work")
def load(n: int) -> int:
    return n


@fails.step(after=load, queue="tr.work", retries=0)
def use(n: int) -> int:
    if broken.is_set():
        raise RuntimeError("the service is down")
    return n * 10


@flowkit.stage(queue="tr.llm", retries=0)
def summarize(text: str, ctx: flowkit.Context) -> str:
    return llm.complete(f"Summarize: {text}", ctx=ctx, model="trace-model")


llm_flow = flowkit.Pipeline("tr-llm", [summarize])
# A 40 ms timer hop: the 120 ms delay is a few hops, each a message of its own.
app = flowkit.App(
    "tracing", flows=[fan, approval, timed, fails, llm_flow], timer_hop="40ms", llm_model="m"
)


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[tuple[flowkit.App, Recorded]]:
    with recording() as rec, embedded(app, tmp_path, threads=4) as a:
        yield a, rec


def _steps(rec: Recorded, step: str) -> list[ReadableSpan]:
    return rec.named(f"flowkit.step {step}")


def test_a_fan_out_run_is_one_trace_under_the_callers_span(
    spans: tuple[flowkit.App, Recorded],
) -> None:
    a, rec = spans
    with rec.tracer.start_as_current_span("caller"):
        run = fan.submit(3)
    assert run.result(timeout=30) == 0 + 1 + 4
    drain(a)  # every worker idle: every span has ended

    caller, submit = rec.one("caller"), rec.one("flowkit.submit tr-fan")
    assert parent_id(submit) == span_id(caller)
    assert submit.kind is SpanKind.PRODUCER
    assert submit.attributes is not None and submit.attributes["flowkit.run_id"] == run.id
    assert {trace_id(s) for s in rec.spans()} == {trace_id(caller)}

    (first,) = _steps(rec, "split")
    assert parent_id(first) == span_id(submit)
    items = _steps(rec, "square")
    assert len(items) == 4  # three items, one of them twice (a retried attempt)
    assert {parent_id(s) for s in items} == {span_id(first)}
    retried = [s for s in items if s.attributes and s.attributes["flowkit.outcome"] == "retried"]
    (bad,) = retried
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.attributes is not None and bad.attributes["flowkit.attempt"] == 1
    assert [e.attributes["exception.type"] for e in bad.events if e.attributes] == ["RuntimeError"]
    succeeded = [
        s for s in items if s.attributes and s.attributes["flowkit.outcome"] == "succeeded"
    ]
    assert len(succeeded) == 3

    (join,) = _steps(rec, "total")
    assert parent_id(join) in {span_id(s) for s in succeeded}  # the item that opened it
    assert {link.context.span_id for link in join.links} == {span_id(s) for s in succeeded}
    attrs = dict(join.attributes or {})
    assert attrs["flowkit.flow"] == "tr-fan" and attrs["flowkit.step"] == "total"
    assert attrs["flowkit.run_id"] == run.id and attrs["flowkit.attempt"] == 1
    assert attrs["messaging.destination.name"] == "tr.work"
    assert attrs["flowkit.outcome"] == "succeeded"
    assert join.kind is SpanKind.CONSUMER


def test_a_signal_continues_the_runs_trace_and_links_the_sender(
    spans: tuple[flowkit.App, Recorded],
) -> None:
    _, rec = spans
    run = approval.submit(7)  # no span of the caller: the submit is the run's root
    wait_for_status(run, flowkit.RunStatus.WAITING)
    with rec.tracer.start_as_current_span("approver") as approver:
        assert run.signal("go", {"ok": True}) is True
    assert run.result(timeout=30) is True
    drain(spans[0])

    submit, signal = rec.one("flowkit.submit tr-approval"), rec.one("flowkit.signal go")
    assert submit.parent is None
    # Parented by the run's stored context, not by the approver's (another trace).
    assert parent_id(signal) == span_id(submit) and trace_id(signal) == trace_id(submit)
    assert [link.context.span_id for link in signal.links] == [approver.get_span_context().span_id]
    (resumed,) = _steps(rec, "decide")
    assert parent_id(resumed) == span_id(signal) and trace_id(resumed) == trace_id(submit)


def test_a_timer_keeps_its_parent_through_every_hop(spans: tuple[flowkit.App, Recorded]) -> None:
    a, rec = spans
    run = timed.submit(1)
    assert run.result(timeout=30) == 2
    drain(a)
    (parent,) = _steps(rec, "before")
    # Hops are not attempts: one span, whose parent is the step that set the timer.
    (later,) = _steps(rec, "after_timer")
    assert parent_id(later) == span_id(parent) and trace_id(later) == trace_id(parent)


def test_a_redrive_continues_the_runs_trace(spans: tuple[flowkit.App, Recorded]) -> None:
    a, rec = spans
    broken.set()
    run = fails.submit(2)
    assert run.wait(timeout=30) is flowkit.RunStatus.FAILED
    broken.clear()
    with rec.tracer.start_as_current_span("operator") as operator:
        assert run.retry() == ["use"]
    assert run.result(timeout=30) == 20
    drain(a)

    submit, redrive = rec.one("flowkit.submit tr-redrive"), rec.one("flowkit.redrive")
    assert parent_id(redrive) == span_id(submit)
    assert [link.context.span_id for link in redrive.links] == [operator.get_span_context().span_id]
    failed, again = sorted(_steps(rec, "use"), key=lambda s: s.start_time or 0)
    assert failed.attributes is not None and failed.attributes["flowkit.outcome"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR
    assert parent_id(again) == span_id(redrive) and trace_id(again) == trace_id(submit)


def test_the_recovery_sweep_sends_the_stored_context(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'sweep.db'}", pool_size=2)
    store.ensure_schema()
    publisher = MemoryPublisher()
    engine = Engine([fan.compile()], store, publisher)
    try:
        with recording() as rec:
            run_id, _ = engine.submit(fan.compile(), 2, key=None)
            (sent,) = publisher.take()
            submit = rec.one("flowkit.submit tr-fan")
        info = store.get_run(run_id)
        assert info is not None and info.trace_context == sent.options["flowkit_trace"]
        assert f"{trace_id(submit):032x}" in info.trace_context["traceparent"]
        # Another process, no span of its own: the sweep's message carries the run's context.
        assert engine.recover(older_than=0, force=True) == 1
        (again,) = publisher.take()
        assert again.options["flowkit_trace"] == info.trace_context
    finally:
        store.dispose()


def test_an_llm_call_is_a_child_span_with_its_tokens(
    spans: tuple[flowkit.App, Recorded],
    openai_server: FakeOpenAI,  # noqa: F811
) -> None:
    a, rec = spans
    openai_server.script = [Reply(content="Short.", prompt_tokens=321, completion_tokens=12)]
    assert llm_flow.submit("a long text").result(timeout=30) == "Short."
    drain(a)
    (step,) = _steps(rec, "summarize")
    call = rec.one("flowkit.llm trace-model")
    assert parent_id(call) == span_id(step) and call.kind is SpanKind.CLIENT
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.request.model"] == "trace-model"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (321, 12)


def test_without_an_sdk_no_message_carries_a_trace_context(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'plain.db'}", pool_size=2)
    store.ensure_schema()
    publisher = MemoryPublisher()
    try:
        run_id, _ = Engine([fan.compile()], store, publisher).submit(fan.compile(), 2, key=None)
        (sent,) = publisher.take()
        assert "flowkit_trace" not in sent.options
        info = store.get_run(run_id)
        assert info is not None and info.trace_context is None
    finally:
        store.dispose()


def test_without_opentelemetry_runs_work_and_import_loads_none_of_it(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import flowkit\n"
        "assert 'opentelemetry' not in sys.modules, 'imported at import time'\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "from flowkit import tracing\n"
        "from flowkit.testing import embedded\n"
        "def inc(x: int) -> int:\n"
        "    return x + 1\n"
        "p = flowkit.Pipeline('plain', [flowkit.stage(inc)])\n"
        "app = flowkit.App('plain', flows=[p])\n"
        f"with embedded(app, {str(tmp_path)!r}):\n"
        "    assert p.submit(1).result(timeout=30) == 2\n"
        "assert not tracing.available() and tracing.current() is None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
