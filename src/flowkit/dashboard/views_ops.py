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

__all__ = [
    "dead_page",
    "flows_json",
    "limits_in_use",
    "limits_text",
    "queues_page",
    "workers_page",
]

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
    in_use = limits_in_use(dash)
    note, depths = None, {}
    if dash.app.settings.embedded:
        note = "queue depths are not available: the broker is memory:// (in-process)"
    else:
        try:
            depths = queue_depths(dash.app.settings.broker_url, names)
        except BrokerError as exc:
            note = redact(str(exc))
    rows = [
        {
            "name": q,
            "depth": depths.get(q),
            "limits": limits.get(q, []),
            "in_use": in_use.get(q, []),
        }
        for q in names
    ]
    return {"queues": rows, "note": note}


def limits_in_use(dash: Dashboard) -> dict[str, list[dict[str, Any]]]:
    """Per queue, each declared limit and how much of it is in use now.

    A concurrency limit counts the steps running now (on the queue, or per
    concurrency key); a rate limit the starts in its current window (the rate
    log). ``by_key`` splits a per-key limit by its keys (as the claim holds
    them: ``flow.step:value``). A queue's own limits are listed once.
    """
    used = dash.store.in_use
    out: dict[str, list[dict[str, Any]]] = {}
    seen: set[tuple[str, str]] = set()

    def add(queue: str, entry: dict[str, Any]) -> None:
        key = (queue, entry["limit"] if entry["step"] is None else entry["step"] + entry["limit"])
        if key not in seen:
            seen.add(key)
            out.setdefault(queue, []).append(entry)

    running = used.running_by_queue(sorted(dash.app.queues()))
    for flow in dash.app.flows:
        for name, stage in flow.compile().steps.items():
            lim, scope, q = stage.limits, f"{flow.name}.{name}", stage.queue
            if lim.queue_concurrency:
                text = f"queue concurrency {lim.queue_concurrency}"
                add(q, _use(None, text, running.get(q, 0), None))
            if lim.queue_rate:
                starts = used.rate_starts(f"queue:{q}", lim.queue_rate.window_ms)
                add(q, _use(None, f"queue rate {lim.queue_rate}", sum(starts.values()), None))
            if lim.concurrency:
                keys = used.running_by_key(scope)
                per = " per key" if lim.concurrency_key else ""
                text = f"concurrency {lim.concurrency}{per}"
                add(q, _use(scope, text, sum(keys.values()), keys if per else None))
            if lim.rate:
                keys = used.rate_starts(scope, lim.rate.window_ms)
                per = " per key" if lim.rate_key else ""
                text = f"rate {lim.rate}{per}"
                add(q, _use(scope, text, sum(keys.values()), keys if per else None))
    return out


def _use(step: str | None, limit: str, now: int, by_key: dict[str, int] | None) -> dict[str, Any]:
    shown = None if by_key is None else {redact(k): n for k, n in sorted(by_key.items())}
    return {"step": step, "limit": limit, "in_use": now, "by_key": shown}


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
                # A gone worker's step is run again once its lease passes (the
                # recovery sweep, or the broker's redelivery, takes it over).
                "resumes_after": None if w.alive else _iso(r.lease_until),
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
