"""OpenTelemetry tracing: one trace per run, across every process that touches it.

flowkit uses only the OpenTelemetry *API* (the ``otel`` extra). You configure
the SDK — a ``TracerProvider`` and its exporter — in your own code, as for any
instrumented library; until you do, spans cost next to nothing and the trace
context of your own spans still travels through the run. Without
``opentelemetry-api`` installed, every function here does nothing.

What travels is a *carrier*: the W3C trace context (``traceparent``,
``tracestate``) as a small ``dict`` written by the configured propagator. It
rides in the options of every message of a run (``RunRef.trace``) and is
stored on the run's row, so a signal, a timer, the recovery sweep or a redrive
in another process continues the run's trace. The spans flowkit makes:

* ``flowkit.submit <flow>``: the run's root, a child of the caller's current span;
* ``flowkit.submit_many <flow>``: the root of every run of one ``submit_many`` batch;
* ``flowkit.step <step>``: one per attempt, a child of the span that published its
  message (the step before it, the signal, the redrive), with a link to each item
  for a join;
* ``flowkit.signal <name>`` and ``flowkit.redrive``: children of the run's stored
  context, linked to the caller's span;
* ``flowkit.llm <model>``: one per model request of :mod:`flowkit.llm`, with its tokens.

.. versionadded:: 0.3
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Literal

from .__about__ import __version__
from .redact import exception_texts

__all__ = ["Carrier", "Kind", "Span", "available", "clean", "current", "ids", "span"]

#: A trace context as message headers: ``{"traceparent": "00-…-…-01", ...}``.
Carrier = dict[str, str]

_MAX_KEYS = 8
_MAX_VALUE = 1024
#: OpenTelemetry's span kinds flowkit uses.
Kind = Literal["internal", "producer", "consumer", "client"]
_UNSET: Any = object()
_otel: Any = _UNSET


def _api() -> Any:
    """The OpenTelemetry API, imported on first use (``None`` when it is not installed)."""
    global _otel
    if _otel is _UNSET:
        try:
            # Lazy: the otel extra is optional, and opentelemetry.propagate reads its
            # propagators' entry points when imported (tens of milliseconds).
            from opentelemetry import propagate, trace
        except ImportError:
            _otel = None
        else:
            _otel = SimpleNamespace(
                trace=trace, propagate=propagate, tracer=trace.get_tracer("flowkit", __version__)
            )
    return _otel


def available() -> bool:
    """Whether ``opentelemetry-api`` is installed (spans are recorded once an SDK is set up)."""
    return _api() is not None


def clean(value: Any) -> Carrier | None:
    """A carrier read from a message or a row: string headers only, bounded; else ``None``."""
    if not isinstance(value, Mapping):
        return None
    out = {
        k: v
        for k, v in list(value.items())[:_MAX_KEYS]
        if isinstance(k, str) and isinstance(v, str) and len(v) <= _MAX_VALUE
    }
    return out or None


def current() -> Carrier | None:
    """The current span's context as a carrier; ``None`` when no span is current."""
    api = _api()
    if api is None:
        return None
    carrier: Carrier = {}
    api.propagate.inject(carrier)
    return clean(carrier)


def ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span in hex, for log lines; ``None`` without one."""
    api = _api()
    if api is None:
        return None
    ctx = api.trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class Span:
    """A span flowkit started (or a stand-in doing nothing without OpenTelemetry).

    :attr:`carrier` is the context to send with the messages published under
    it: this span's, or the parent's when nothing records spans.
    """

    def __init__(self, span: Any, carrier: Carrier | None) -> None:
        self._span = span
        self.carrier = carrier

    @classmethod
    def current(cls) -> Span:
        """The current span (a stand-in doing nothing when there is none)."""
        api = _api()
        return cls(None if api is None else api.trace.get_current_span(), None)

    def set(self, key: str, value: str | int | float | bool) -> None:
        """Set one attribute (``flowkit.outcome``, ``gen_ai.usage.input_tokens``, ...)."""
        if self._span is not None:
            self._span.set_attribute(key, value)

    def link(self, carrier: Carrier) -> None:
        """Link this span to the span of another carrier (a join to its items)."""
        api = _api()
        if self._span is None or api is None:
            return
        other = _context_of(api, carrier)
        if other is not None:
            self._span.add_link(other)

    def fail(self, exc: BaseException) -> None:
        """Record ``exc`` on the span, its texts redacted as in logs, and mark it an error."""
        if self._span is None or not self._span.is_recording():
            return
        api = _api()
        message, stack = exception_texts(exc)
        self._span.record_exception(
            exc, attributes={"exception.message": message, "exception.stacktrace": stack}
        )
        status = api.trace.Status(api.trace.StatusCode.ERROR, f"{type(exc).__name__}: {message}")
        self._span.set_status(status)

    @property
    def recording(self) -> bool:
        """Whether an SDK records this span (worth reading extra data for it)."""
        return self._span is not None and bool(self._span.is_recording())


def _context_of(api: Any, carrier: Carrier | None) -> Any:
    """The span context a carrier holds, or ``None``."""
    if not carrier:
        return None
    ctx = api.trace.get_current_span(api.propagate.extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


@contextmanager
def span(
    name: str,
    *,
    parent: Carrier | None = None,
    kind: Kind = "internal",
    attributes: Mapping[str, str | int | float | bool | None] | None = None,
    link_caller: bool = False,
    quiet: tuple[type[BaseException], ...] = (),
) -> Iterator[Span]:
    """A span, current inside the block; an exception leaving the block is recorded on it.

    Parameters:
        name: the span's name.
        parent: the carrier of its parent; ``None``: the caller's current span
            (a new trace if there is none).
        kind: ``internal``, ``producer``, ``consumer`` or ``client``.
        attributes: its attributes (``None`` values are left out).
        link_caller: with a ``parent``, link the caller's current span too.
        quiet: exceptions that leave the block without marking the span an error
            (a retry the caller already recorded).
    """
    api = _api()
    if api is None:
        yield Span(None, parent)
        return
    links: Sequence[Any] = ()
    caller = api.trace.get_current_span().get_span_context()
    if parent is not None and link_caller and caller.is_valid:
        links = [api.trace.Link(caller)]
    started = api.tracer.start_span(
        name,
        context=api.propagate.extract(parent) if parent is not None else None,
        kind=getattr(api.trace.SpanKind, kind.upper()),
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        links=links,
    )
    with api.trace.use_span(
        started, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        handle = Span(started, current() or parent)
        try:
            yield handle
        except BaseException as exc:
            if not isinstance(exc, quiet):
                handle.fail(exc)
            raise
