"""Runs and steps as the CLI prints them: payloads with their secrets masked, and the
rows ``flowkit runs show`` adds for a workflow's unreached steps."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..app import App
from ..graph import FlowGraph
from ..records import RunInfo, StepInfo
from ..redact import mask_secret_fields
from ..status import StepStatus


def unreached_steps(run: RunInfo, steps: list[StepInfo], graph: FlowGraph) -> list[StepInfo]:
    """A ``skipped`` row (for the timeline only) per step of ``graph`` that has none."""
    have = {s.name for s in steps}
    at = run.finished_at or run.created_at
    return [
        StepInfo(
            id="",
            run_id=run.id,
            name=name,
            item=None,
            status=StepStatus.SKIPPED,
            queue=stage.queue,
            attempts=0,
            input=None,
            output=None,
            error=None,
            created_at=at,
            started_at=None,
            finished_at=None,
        )
        for name, stage in graph.steps.items()
        if name not in have
    ]


def shown_output(run: RunInfo, app: App | None) -> Any:
    """A run's stored output as the CLI may print it: secret fields masked.

    The database keeps secrets (pydantic ``SecretStr``) in the clear, so the
    next step gets them. With the flow's App, its output model masks exactly
    the fields it declares secret; without it (or for a ``Stop`` output, which
    has no model), fields whose names look secret are masked instead.
    """
    if run.output is None:
        return None
    if app is not None and run.stop_reason is None and knows(app, run.flow):
        adapter = TypeAdapter(app.flow(run.flow).output_type)
        try:
            return adapter.dump_python(adapter.validate_python(run.output), mode="json")
        except ValidationError:
            pass  # stored by another version of the flow
    return mask_secret_fields(run.output)


def knows(app: App, flow: str) -> bool:
    return flow in {f.name for f in app.flows}


def shown_input(run: RunInfo, app: App | None) -> Any:
    """A run's stored input as the CLI may print it: masked as :func:`shown_output` masks."""
    if run.input is None:
        return None
    if app is not None and knows(app, run.flow):
        adapter = TypeAdapter(app.flow(run.flow).compile().entry.input_type)
        try:
            return adapter.dump_python(adapter.validate_python(run.input), mode="json")
        except ValidationError:
            pass  # stored by another version of the flow
    return mask_secret_fields(run.input)


def run_dict(r: RunInfo, app: App | None = None) -> dict[str, Any]:
    return {
        "id": r.id,
        "flow": r.flow,
        "key": r.key,
        "status": r.status.value,
        "created_at": r.created_at.isoformat(),
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "finished_at": r.finished_at.isoformat() if r.finished_at else None,
        "duration": r.duration,
        "error": public_error(r.error),
        "input": shown_input(r, app),
        "output": shown_output(r, app),
        "stop_reason": r.stop_reason,
    }


def step_dict(s: StepInfo) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "item": s.item,
        "status": s.status.value,
        "queue": s.queue,
        "attempts": s.attempts,
        "started_at": s.started_at.isoformat() if s.started_at else None,
        "finished_at": s.finished_at.isoformat() if s.finished_at else None,
        "duration": s.duration,
        "error": s.error,
    }


def public_error(err: dict[str, Any] | None) -> dict[str, Any] | None:
    if not err:
        return None
    return {k: err.get(k) for k in ("type", "message", "step", "attempt")}
