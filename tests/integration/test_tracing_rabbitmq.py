"""One run, one trace, across real ``flowkit worker`` processes on RabbitMQ and PostgreSQL.

The test process runs the collector: an OTLP/HTTP receiver on 127.0.0.1 that
decodes the protobuf ``ExportTraceServiceRequest`` bodies the workers' SDK
sends (``trace_flows.py`` sets the SDK up, as a user's app module would). The
run is submitted from the test process inside a span of the test's own; two
worker processes serve different steps, so the trace crosses processes at every
edge of the fan-out. The workers log JSON lines (``--log-format json``) to a file.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from helpers import HERE, Workers, bound_app, env_fixture, workers_fixture  # noqa: F401
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_support import recording, span_id, trace_id

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'trace_flows.py'}:app"
ITEMS = 5


@dataclass(frozen=True)
class Received:
    """A span as the collector received it."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    links: frozenset[int]
    attributes: dict[str, Any]
    pid: int


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP receiver for ``/v1/traces`` keeping every span it is sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    received = Received(
                        name=s.name,
                        trace_id=_int(s.trace_id),
                        span_id=_int(s.span_id),
                        parent_id=_int(s.parent_span_id) if s.parent_span_id else None,
                        links=frozenset(_int(link.span_id) for link in s.links),
                        attributes={a.key: _value(a.value) for a in s.attributes},
                        pid=int(resource["process.pid"]),
                    )
                    with self.lock:
                        self.spans.append(received)


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces":
            self.send_error(404)
            return
        self.server.keep(body)
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows failures, not every request


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def traced_app(pg_url: str, rabbitmq_url: str) -> Iterator[Any]:
    import trace_flows

    with bound_app(trace_flows.app, pg_url, rabbitmq_url) as app:
        yield app


def test_a_fan_out_run_is_one_trace_across_worker_processes(
    traced_app: Any, workers: Workers, collector: Collector, tmp_path: Path
) -> None:
    import trace_flows

    workers.env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = collector.endpoint
    log_file = str(tmp_path / "worker_{pid}.log")
    common = ("--log-format", "json", "--log-file", log_file)
    ends = workers.start(TARGET, "--queues", "itr.split", "itr.join", *common, name="ends")
    middle = workers.start(TARGET, "--queues", "itr.items", *common, name="items")
    ends.wait_started()
    middle.wait_started()

    with recording() as rec:
        with rec.tracer.start_as_current_span("test") as test_span:
            run = trace_flows.fanout.submit(ITEMS)
        assert run.result(timeout=60) == sum(i * i for i in range(ITEMS))
        here = {s.name: s for s in rec.spans()}
    # A graceful stop ends every span and flushes the SDK's batch at exit.
    workers.stop_all()
    assert [w.proc.returncode for w in workers.all] == [0, 0], workers.logs()

    test_ctx, submit = (
        test_span.get_span_context(),
        here[f"flowkit.submit {trace_flows.fanout.name}"],
    )
    assert submit.parent is not None and submit.parent.span_id == test_ctx.span_id
    spans = collector.spans
    assert {s.trace_id for s in spans} == {test_ctx.trace_id} == {trace_id(submit)}

    def steps(name: str) -> list[Received]:
        return [s for s in spans if s.name == f"flowkit.step {name}"]

    (first,) = steps("split")
    items = steps("square")
    (join,) = steps("total")
    assert first.parent_id == span_id(submit)
    assert len(items) == ITEMS and {s.parent_id for s in items} == {first.span_id}
    assert sorted(s.attributes["flowkit.item"] for s in items) == list(range(ITEMS))
    assert join.parent_id in {s.span_id for s in items}  # the item that opened the join
    assert join.links == {s.span_id for s in items}
    # Each edge crossed processes: the items ran in the other worker.
    assert first.pid == join.pid == ends.pid and {s.pid for s in items} == {middle.pid}
    for s in [first, *items, join]:
        assert s.attributes["flowkit.run_id"] == run.id
        assert s.attributes["flowkit.outcome"] == "succeeded"
        assert s.attributes["flowkit.attempt"] == 1
    assert join.attributes["messaging.destination.name"] == "itr.join"

    # The items' JSON log lines in the worker's --log-file carry the run and the trace.
    lines = [
        json.loads(line) for line in Path(log_file.format(pid=middle.pid)).read_text().splitlines()
    ]
    squaring = [r for r in lines if r["message"].startswith("squaring")]
    assert len(squaring) == ITEMS
    for r in squaring:
        assert (r["run_id"], r["step"], r["attempt"]) == (run.id, "square", 1)
        assert r["trace_id"] == f"{test_ctx.trace_id:032x}"
        assert int(r["span_id"], 16) in {s.span_id for s in items}
