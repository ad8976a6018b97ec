"""One OpenTelemetry SDK for the test process, recording only while a test asks it to.

OpenTelemetry lets a process set its global ``TracerProvider`` once. This one
is set on first use and hands out tracers that record through the SDK (into an
in-memory exporter) only inside :func:`recording`; elsewhere they are the API's
no-op tracers, so the rest of the suite sees what a user without an SDK sees:
no span, and no trace context on any message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _SwitchedTracer(trace.Tracer):
    def __init__(self, owner: _Switched, real: trace.Tracer) -> None:
        self.owner = owner
        self.real = real
        self.off = trace.NoOpTracer()

    def _now(self) -> trace.Tracer:
        return self.real if self.owner.on else self.off

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._now().start_span(*args, **kwargs)

    @contextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        with self._now().start_as_current_span(*args, **kwargs) as span:
            yield span


class _Switched(trace.TracerProvider):
    def __init__(self) -> None:
        self.sdk = TracerProvider()
        self.exporter = InMemorySpanExporter()
        self.sdk.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.on = False

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _SwitchedTracer(self, self.sdk.get_tracer(*args, **kwargs))


_provider: _Switched | None = None


def _installed() -> _Switched:
    global _provider
    if _provider is None:
        _provider = _Switched()
        trace.set_tracer_provider(_provider)
    return _provider


class Recorded:
    """The spans recorded inside :func:`recording`, and a tracer for the test's own spans."""

    def __init__(self, provider: _Switched) -> None:
        self._provider = provider
        self.tracer = provider.sdk.get_tracer("flowkit-tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self._provider.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]


@contextmanager
def recording() -> Iterator[Recorded]:
    """Record every span started in this process inside the block."""
    provider = _installed()
    provider.exporter.clear()
    provider.on = True
    try:
        yield Recorded(provider)
    finally:
        provider.on = False
        provider.exporter.clear()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id
