"""Prometheus metrics for a worker process (``flowkit worker --metrics-port``).

Counters of steps started, succeeded, failed, retried and delayed by flow, step
and queue; a histogram of step durations; LLM tokens and cost; and runs by
status, read from the database when Prometheus scrapes. Needs the ``metrics``
extra (``pip install '.[metrics]'`` from flowkit's source).

.. versionadded:: 0.1
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .observability import Observer
from .status import StepStatus

if TYPE_CHECKING:
    from .app import App

__all__ = ["PrometheusObserver", "serve_metrics"]

#: The outcomes that end a step, when its usage (a total over its attempts) is counted.
_ENDED = frozenset({StepStatus.SUCCEEDED.value, StepStatus.FAILED.value})


def _prom() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            "metrics need prometheus-client: pip install '.[metrics]' from flowkit's source"
        ) from exc
    return prometheus_client


class PrometheusObserver(Observer):
    """Counts what the runtime does into its own Prometheus registry."""

    def __init__(self, app: App | None = None) -> None:
        prom = _prom()
        self.registry = prom.CollectorRegistry()
        labels = ["flow", "step", "queue"]
        self.started = prom.Counter(
            "flowkit_steps_started", "Step attempts started", labels, registry=self.registry
        )
        self.succeeded = prom.Counter(
            "flowkit_steps_succeeded", "Steps succeeded", labels, registry=self.registry
        )
        self.failed = prom.Counter(
            "flowkit_steps_failed", "Steps failed for good", labels, registry=self.registry
        )
        self.retried = prom.Counter(
            "flowkit_steps_retried",
            "Step attempts failed and retried",
            labels,
            registry=self.registry,
        )
        self.delayed = prom.Counter(
            "flowkit_steps_delayed",
            "Steps put off by a rate or concurrency limit",
            labels,
            registry=self.registry,
        )
        self.duration = prom.Histogram(
            "flowkit_step_duration_seconds",
            "Step attempt duration",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.tokens = prom.Counter(
            "flowkit_llm_tokens",
            "LLM tokens spent by steps",
            ["flow", "step", "kind"],
            registry=self.registry,
        )
        self.cost = prom.Counter(
            "flowkit_llm_cost_usd",
            "LLM cost of steps (USD)",
            ["flow", "step"],
            registry=self.registry,
        )
        if app is not None:
            self.registry.register(_RunsCollector(app))

    def step_started(self, *, flow: str, step: str, queue: str, attempt: int) -> None:
        self.started.labels(flow, step, queue).inc()

    def step_finished(
        self,
        *,
        flow: str,
        step: str,
        queue: str,
        outcome: str,
        seconds: float,
        usage: dict[str, Any] | None = None,
    ) -> None:
        counter = {
            StepStatus.SUCCEEDED.value: self.succeeded,
            StepStatus.FAILED.value: self.failed,
            "retried": self.retried,  # an outcome, not a status: the step is queued again
        }.get(outcome)
        if counter is not None:
            counter.labels(flow, step, queue).inc()
        self.duration.labels(flow, step, queue, outcome).observe(seconds)
        # usage is the step's total over its attempts: count it once, when it ends.
        if usage and outcome in _ENDED:
            for kind in ("prompt_tokens", "completion_tokens"):
                if usage.get(kind):
                    self.tokens.labels(flow, step, kind.split("_")[0]).inc(usage[kind])
            if usage.get("cost"):
                self.cost.labels(flow, step).inc(usage["cost"])

    def step_delayed(self, *, flow: str, step: str, queue: str, seconds: float) -> None:
        self.delayed.labels(flow, step, queue).inc()


class _RunsCollector:
    """``flowkit_runs{flow,status}`` from the database, cached for 5 seconds."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._cache: tuple[float, list[tuple[str, str, int]]] = (0.0, [])
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            at, rows = self._cache
            if time.monotonic() - at > 5:
                rows = [
                    (f.name, status, n)
                    for f in self.app.flows
                    for status, n in self.app.store.count_runs(flow=f.name).items()
                ]
                self._cache = (time.monotonic(), rows)
        family = GaugeMetricFamily(
            "flowkit_runs", "Runs by flow and status", labels=["flow", "status"]
        )
        for flow, status, n in rows:
            family.add_metric([flow, status], n)
        yield family


def serve_metrics(app: App, port: int, host: str = "0.0.0.0") -> Any:
    """Add a :class:`PrometheusObserver` to ``app`` and serve ``/metrics`` on ``port``."""
    prom = _prom()
    observer = PrometheusObserver(app)
    app.observers.append(observer)
    server, _thread = prom.start_http_server(port, addr=host, registry=observer.registry)
    return server
