"""The data of the runs pages, as plain dicts: the HTML pages and the JSON API share them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from .._types import parse_duration_ms
from ..errors import ConfigurationError, FlowkitError, RunNotFound
from ..graph import FlowGraph
from ..records import AttemptInfo, RunInfo, StepInfo
from ..status import RunStatus, StepStatus
from ..store import ReceivedSignal, RunFilter, SignalWait
from .core import Dashboard
from .shown import error_dict, run_input, run_output, shown, step_input, step_output

__all__ = [
    "FILTER_KEYS",
    "attempt_log",
    "filter_from",
    "run_detail",
    "run_dict",
    "runs_page",
    "signals_awaited",
    "signals_received",
    "step_dict",
]

FILTER_KEYS = ("flow", "status", "key_prefix", "since", "until", "error_type")
MAX_LIMIT = 500
#: an aggregate step's status: the first of these any of its items has
_GROUP_ORDER = ("running", "failed", "waiting", "queued", "cancelled", "skipped", "succeeded")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _moment(raw: str, what: str) -> datetime:
    """``2026-01-31``, ``2026-01-31T10:00`` (UTC unless it says otherwise) or ``24h`` ago."""
    text = raw.strip()
    if text and text[-1] in "smhdw" and text[:-1].replace(".", "").isdigit():
        ms = parse_duration_ms(text, what=what) or 0
        return datetime.now(timezone.utc) - timedelta(milliseconds=ms)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"{what} {raw!r} is neither a date (2026-01-31T10:00) nor a duration (24h)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def filter_from(params: Mapping[str, str]) -> tuple[RunFilter, dict[str, str]]:
    """The run filter named by query parameters, and those parameters (empty ones dropped).

    Raises:
        ConfigurationError: an unknown status, or a since/until that is no moment.
    """
    given = {k: params[k].strip() for k in FILTER_KEYS if params.get(k, "").strip()}
    status = given.get("status")
    if status is not None and status not in {s.value for s in RunStatus}:
        known = ", ".join(s.value for s in RunStatus)
        raise ConfigurationError(f"unknown status {status!r} (known: {known})")
    since = _moment(given["since"], "since") if "since" in given else None
    until = _moment(given["until"], "until") if "until" in given else None
    f = RunFilter(
        flow=given.get("flow"),
        status=status,
        key_prefix=given.get("key_prefix"),
        since=since,
        until=until,
        error_type=given.get("error_type"),
    )
    return f, given


def limit_from(raw: str | None, default: int = 50) -> int:
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ConfigurationError(f"limit {raw!r} is not a number") from None
    if not 1 <= n <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be in 1..{MAX_LIMIT}")
    return n


def run_dict(
    r: RunInfo, graph: FlowGraph | None = None, *, payloads: bool = False
) -> dict[str, Any]:
    """A run as JSON; with ``payloads``, its input and output too (secrets masked)."""
    err = error_dict(r.error)
    doc: dict[str, Any] = {
        "id": r.id,
        "flow": r.flow,
        "key": r.key,
        "status": r.status.value,
        "priority": r.priority,
        "error_type": r.error_type,
        "stop_reason": r.stop_reason,
        "created_at": _iso(r.created_at),
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "duration": r.duration,
    }
    if payloads:
        doc["error"] = err
        doc["input"] = run_input(r, graph)
        doc["output"] = run_output(r, graph)
    return doc


def step_dict(
    s: StepInfo, graph: FlowGraph | None = None, *, payloads: bool = False
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "item": s.item,
        "status": s.status.value,
        "queue": s.queue,
        "attempts": s.attempts,
        "worker_id": s.worker_id,
        "created_at": _iso(s.created_at),
        "started_at": _iso(s.started_at),
        "finished_at": _iso(s.finished_at),
        "duration": s.duration,
        "error": error_dict(s.error),
        "usage": s.usage,
    }
    if payloads:
        doc["input"] = step_input(s, graph)
        doc["output"] = step_output(s, graph)
    return doc


def attempt_log(s: StepInfo, logged: list[AttemptInfo]) -> list[dict[str, Any]]:
    """Every attempt of a step, oldest first: the logged ones that did not succeed, then the
    step row's own (its last attempt) unless the log already holds it (a final failure).

    ``current`` marks the entry the step row shows; the others are its earlier attempts.
    """
    out = [
        {
            "attempt": a.attempt,
            "outcome": a.outcome,
            "worker_id": a.worker_id,
            "started_at": _iso(a.started_at),
            "finished_at": _iso(a.finished_at),
            "duration": a.duration,
            "error": error_dict(a.error),
            "current": (
                a.outcome == "failed"
                and a.attempt == s.attempts
                and a.started_at == s.started_at
                and s.status is StepStatus.FAILED
            ),
        }
        for a in logged
    ]
    if s.attempts and s.started_at is not None and not any(e["current"] for e in out):
        known = any(a.attempt == s.attempts and a.started_at == s.started_at for a in logged)
        if not known:  # the step row's attempt (running, succeeded, ...), not in the log
            out.append(
                {
                    "attempt": s.attempts,
                    "outcome": s.status.value,
                    "worker_id": s.worker_id,
                    "started_at": _iso(s.started_at),
                    "finished_at": _iso(s.finished_at),
                    "duration": s.duration,
                    "error": error_dict(s.error),
                    "current": True,
                }
            )
    return out


def signals_received(
    received: list[ReceivedSignal], graph: FlowGraph | None
) -> list[dict[str, Any]]:
    """The signals a run received: name, when, and the payload as it may be shown."""
    adapters = {}
    if graph is not None:
        adapters = {st.wait_for: st.signal_adapter for st in graph.steps.values() if st.wait_for}
    return [
        {
            "name": r.name,
            "received_at": _iso(r.received_at),
            "payload": shown(r.payload, adapters.get(r.name)),
        }
        for r in received
    ]


def signals_awaited(
    graph: FlowGraph | None,
    run: RunInfo,
    steps: list[StepInfo],
    waits: list[SignalWait],
    received: list[ReceivedSignal],
) -> list[dict[str, Any]]:
    """The signals the run's steps wait for and have not received, each with its step and
    deadline (the waiting row's ``scheduled_at`` once only the signal is missing)."""
    if graph is None or run.status.terminal:
        return []
    got = {r.name for r in received}
    done = {s.name for s in steps if s.status.terminal or s.status is StepStatus.RUNNING}
    waiting = {w.name: w for w in waits}
    out = []
    for name, stage in graph.steps.items():
        if not stage.wait_for or name in done or stage.wait_for in got:
            continue
        w = waiting.get(name)
        out.append(
            {
                "signal": stage.wait_for,
                "step": name,
                "step_id": w.step_id if w is not None else None,
                "waiting": w is not None,
                "deadline": _iso(w.deadline) if w is not None else None,
            }
        )
    return out


def runs_page(dash: Dashboard, params: Mapping[str, str]) -> dict[str, Any]:
    """The runs list: counts by status, one page of runs newest first, the next cursor.

    Raises:
        ConfigurationError: a bad filter, limit or cursor (and the store's own
            error for a malformed cursor).
    """
    f, given = filter_from(params)
    limit = limit_from(params.get("limit"))
    store = dash.store
    page = store.queries.page(f, limit=limit, cursor=params.get("cursor") or None)
    return {
        "filters": given,
        "counts": store.queries.counts(flow=given.get("flow")),
        "runs": [run_dict(r) for r in page.runs],
        "next_cursor": page.next_cursor,
    }


def _group_status(counts: Counter[str]) -> str:
    return next((s for s in _GROUP_ORDER if counts.get(s)), "queued")


def step_groups(steps: list[dict[str, Any]], graph: FlowGraph | None) -> list[dict[str, Any]]:
    """One entry per step name, in flow order: its rows' counts by status, failed and slowest."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        by_name.setdefault(s["name"], []).append(s)
    names = list(graph.order()) if graph is not None else list(by_name)
    names += [n for n in by_name if n not in names]  # a step since removed from the flow
    groups = []
    for name in names:
        rows = by_name.get(name, [])
        counts = Counter(r["status"] for r in rows)
        each = graph.is_each(name) if graph is not None and name in graph.steps else None
        each = bool(each) or any(r["item"] is not None for r in rows)
        timed = [r for r in rows if r["duration"] is not None]
        groups.append(
            {
                "name": name,
                "each": each,
                "total": len(rows),
                "status": _group_status(counts) if rows else "not started",
                "counts": dict(sorted(counts.items(), key=lambda kv: _GROUP_ORDER.index(kv[0]))),
                "failed": [r for r in rows if r["status"] == StepStatus.FAILED.value][:10],
                "slowest": sorted(timed, key=lambda r: -r["duration"])[:5] if each else [],
            }
        )
    return groups


def shown_timeline(steps: list[dict[str, Any]], cap: int = 40) -> list[dict[str, Any]]:
    """The timeline's rows: every plain step; of a big fan-out, its first items, its
    unfinished or failed ones and its slowest (the counts are on the DAG)."""
    slow_ids = set()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in steps:
        if s["item"] is not None:
            by_name.setdefault(s["name"], []).append(s)
    for rows in by_name.values():
        timed = sorted((r for r in rows if r["duration"] is not None), key=lambda r: -r["duration"])
        slow_ids |= {r["id"] for r in timed[:5]}
    seen: Counter[str] = Counter()
    out = []
    for s in steps:
        if s["item"] is not None:
            seen[s["name"]] += 1
            keep = seen[s["name"]] <= cap or s["status"] != "succeeded" or s["id"] in slow_ids
            if not keep:
                continue
        out.append(s)
    return out


def waiting_signals(graph: FlowGraph | None, run: RunInfo, steps: list[StepInfo]) -> list[str]:
    """The signals the run may still take: its steps that wait for one and are not done."""
    if graph is None or run.status.terminal:
        return []
    done = {s.name for s in steps if s.status.terminal or s.status is StepStatus.RUNNING}
    return [s.wait_for for n, s in graph.steps.items() if s.wait_for and n not in done]


def require_run(dash: Dashboard, run_id: str) -> RunInfo:
    """The run, from a store whose schema is known to be there.

    Raises:
        RunNotFound: no such run.
    """
    run = dash.store.get_run(run_id)
    if run is None:
        raise RunNotFound(f"no run {run_id!r}")
    return run


def run_detail(dash: Dashboard, run_id: str) -> dict[str, Any]:
    """Everything the run page shows (secrets masked).

    Raises:
        RunNotFound: no such run.
    """
    run = require_run(dash, run_id)
    store = dash.store
    steps = store.get_steps(run_id)
    logged: dict[str, list[AttemptInfo]] = {}
    for a in store.get_attempts(run_id):
        logged.setdefault(a.step_id, []).append(a)
    received = store.get_signals(run_id)
    graph = dash.graph(run.flow)
    rows = []
    for s in steps:
        rows.append(step_dict(s, graph, payloads=True))
        rows[-1]["attempt_log"] = attempt_log(s, logged.get(s.id, []))
    doc = run_dict(run, graph, payloads=True)
    # RunInfo does not carry the stored deadline: the flow's timeout from submit says
    # when it was first set (a retry sets it again from the retry).
    doc["deadline_estimate"] = None
    if graph is not None and graph.timeout_ms:
        doc["deadline_estimate"] = _iso(run.created_at + timedelta(milliseconds=graph.timeout_ms))
    usage = [s.usage for s in steps if s.usage]
    doc["usage"] = _total_usage(usage) if usage else None
    doc["steps"] = rows
    doc["groups"] = step_groups(rows, graph)
    doc["signals"] = waiting_signals(graph, run, steps)
    waits = store.signal_waits(run_id) if not run.status.terminal else []
    doc["signals_awaited"] = signals_awaited(graph, run, steps, waits, received)
    doc["signals_received"] = signals_received(received, graph)
    doc["has_definitions"] = graph is not None
    return doc


def _total_usage(usages: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for u in usages:
        for k, v in u.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] = total.get(k, 0) + v
    return total


def retry_preview(dash: Dashboard, run_id: str, from_step: str | None) -> dict[str, Any]:
    """What retrying would do, as JSON.

    Raises:
        RunNotFound, RunStateError, NotFoundError: as ``App.retry_preview``.
    """
    p = dash.app.retry_preview(run_id, from_step=from_step or None)
    return {
        "run_id": p.run_id,
        "start": p.start,
        "rerun": list(p.rerun),
        "reused": list(p.reused),
        "kept_items": p.kept_items,
    }


def preview_or_reason(dash: Dashboard, run_id: str, from_step: str | None) -> dict[str, Any]:
    """A retry preview, or ``{"refused": why}`` when the run cannot be retried."""
    try:
        return retry_preview(dash, run_id, from_step)
    except FlowkitError as exc:
        return {"refused": str(exc)}
