"""The data of the operations pages (flows, queues, workers, dead letters), as plain dicts."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from .._types import type_name
from ..cron import next_tick, parse_cron
from ..errors import BrokerError
from ..flows import Flow
from ..queue_depths import queue_depths
from ..queues import StepLimits
from ..records import WorkerInfo
from ..redact import mask_secret_fields, redact
from ..runtime.heartbeat import heartbeat_seconds
from .core import Dashboard

__all__ = ["dead_page", "flows_json", "limits_text", "queues_page", "workers_page"]

BODY_CHARS = 600
#: workers gone (stopped or silent) for longer than this are not listed
GONE_WITHIN = 3600.0
#: a worker that missed this many heartbeats is shown gone (as ``flowkit status`` does)
STALE_BEATS = 3
NEEDS_DEFINITIONS = (
    "this needs the flow definitions: start the dashboard with MODULE:ATTR (or $FLOWKIT_APP)"
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def limits_text(limits: StepLimits) -> list[str]:
    """A step's limits in words (``queue concurrency 4``, ``rate 10/1000ms per key``)."""
    out = []
    if limits.queue_concurrency:
        out.append(f"queue concurrency {limits.queue_concurrency}")
    if limits.queue_rate:
        out.append(f"queue rate {limits.queue_rate}")
    if limits.concurrency:
        per = " per key" if limits.concurrency_key else ""
        out.append(f"concurrency {limits.concurrency}{per}")
    if limits.rate:
        per = " per key" if limits.rate_key else ""
        out.append(f"rate {limits.rate}{per}")
    return out


def _ticks(flow: Flow, n: int = 3) -> list[str]:
    if not flow.schedule:
        return []
    spec = parse_cron(flow.schedule, what=f"flow {flow.name!r}")
    out, moment = [], datetime.now(timezone.utc)
    for _ in range(n):
        moment = next_tick(spec, moment)
        out.append(moment.isoformat())
    return out


def _flow(flow: Flow, counts: dict[str, int]) -> dict[str, Any]:
    graph = flow.compile()
    steps = []
    for name, stage in graph.steps.items():
        steps.append(
            {
                "name": name,
                "queue": stage.queue,
                "retries": stage.retries,
                "timeout_ms": stage.timeout_ms,
                "delay_ms": stage.delay_ms,
                "wait_for": stage.wait_for,
                "signal_type": type_name(stage.signal_type) if stage.wait_for else None,
                "input_type": type_name(stage.input_type),
                "output_type": type_name(stage.output_type),
                "each": graph.is_each(name),
                "join": graph.is_join(name),
                "parents": graph.parents(name),
                "limits": limits_text(stage.limits),
            }
        )
    return {
        "name": flow.name,
        "kind": graph.kind,
        "timeout_ms": graph.timeout_ms,
        "events": list(graph.events),
        "schedule": flow.schedule,
        "next_ticks": _ticks(flow),
        "steps": steps,
        "runs": counts,
    }


def flows_json(dash: Dashboard) -> dict[str, Any]:
    """Every flow of the App: its steps and options, events, schedule, runs by status."""
    if not dash.has_flows:
        return {"flows": [], "note": NEEDS_DEFINITIONS}
    by_flow = dash.store.queries.counts_by_flow()
    return {"flows": [_flow(f, by_flow.get(f.name, {})) for f in dash.app.flows], "note": None}


def queues_page(dash: Dashboard) -> dict[str, Any]:
    """Per queue: ready, delayed and dead messages and consumers (RabbitMQ), and its limits."""
    if not dash.has_flows:
        return {"queues": [], "note": NEEDS_DEFINITIONS}
    from ..runtime.publisher import CONTROL_QUEUE  # the runtime loads on first use

    limits: dict[str, list[str]] = {}
    for flow in dash.app.flows:
        for name, stage in flow.compile().steps.items():
            for text in limits_text(stage.limits):
                limits.setdefault(stage.queue, []).append(f"{flow.name}.{name}: {text}")
    names = sorted(dash.app.queues() | {CONTROL_QUEUE})
    note, depths = None, {}
    if dash.app.settings.embedded:
        note = "queue depths are not available: the broker is memory:// (in-process)"
    else:
        try:
            depths = queue_depths(dash.app.settings.broker_url, names)
        except BrokerError as exc:
            note = redact(str(exc))
    rows = [{"name": q, "depth": depths.get(q), "limits": limits.get(q, [])} for q in names]
    return {"queues": rows, "note": note}


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round((now - moment).total_seconds(), 1)


def _worker(w: WorkerInfo, now: datetime) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues) if w.queues is not None else None,
        "threads": w.threads,
        "version": w.version,
        "started_at": _iso(w.started_at),
        "heartbeat_at": _iso(w.heartbeat_at),
        "heartbeat_age": _age(w.heartbeat_at, now),
        "stopped_at": _iso(w.stopped_at),
        "alive": bool(w.alive),
        "running": [
            {
                "step_id": r.step_id,
                "run_id": r.run_id,
                "flow": r.flow,
                "name": r.name,
                "item": r.item,
                "started_at": _iso(r.started_at),
                "lease_until": _iso(r.lease_until),
            }
            for r in w.running
        ],
    }


def workers_page(dash: Dashboard) -> dict[str, Any]:
    """Live and recently gone workers, with the steps they are running."""
    stale = STALE_BEATS * heartbeat_seconds()
    found = dash.store.workers.list(gone_within=GONE_WITHIN, stale_after=stale)
    now = datetime.now(timezone.utc)
    return {"workers": [_worker(w, now) for w in found], "note": None}


def _body(body: str | None) -> str | None:
    if body is None:
        return None
    try:
        text = json.dumps(mask_secret_fields(json.loads(body)), ensure_ascii=False)
    except (ValueError, RecursionError):
        text = body
    text = redact(text)
    return text if len(text) <= BODY_CHARS else text[: BODY_CHARS - 1] + "…"


def dead_page(dash: Dashboard, limit: int = 200) -> dict[str, Any]:
    """The newest dead letters, bodies redacted and truncated."""
    letters = dash.store.dead_letters.newest(limit=limit)
    return {
        "dead": [
            {
                "id": d.id,
                "queue": d.queue,
                "actor": d.actor,
                "message_id": d.message_id,
                "run_id": d.run_id,
                "step_id": d.step_id,
                "reason": redact(d.reason),
                "created_at": _iso(d.created_at),
                "body": _body(d.body),
            }
            for d in letters
        ]
    }
