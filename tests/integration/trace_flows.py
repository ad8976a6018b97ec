"""A fan-out workflow whose worker processes export their spans over OTLP/HTTP.

The SDK is set up here, in the app module, as a user's own code would: when
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (the test sets it for the worker
processes only), a ``TracerProvider`` with the OTLP/HTTP exporter becomes the
process's provider. flowkit itself only uses the OpenTelemetry API.
"""

from __future__ import annotations

import os

import flowkit

if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "it-tracing", "process.pid": os.getpid()})
    provider = TracerProvider(resource=resource)  # flushed at exit (shutdown_on_exit)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)

fanout = flowkit.Workflow("it-trace")


@fanout.step(queue="itr.split")
def split(n: int) -> list[int]:
    return list(range(n))


@fanout.step(after=split, each=True, queue="itr.items")
def square(x: int, ctx: flowkit.Context) -> int:
    ctx.logger.info("squaring %d", x)
    return x * x


@fanout.step(after=square, queue="itr.join")
def total(xs: list[int]) -> int:
    return sum(xs)


app = flowkit.App("it-trace", flows=[fanout])
