"""What a step's completion changes in its run, computed from the flow's graph.

Pure functions: the flow says who follows whom; the plan says which rows to
insert, which join counters to move and whether the run may be finishing.
The store applies a plan in the same transaction that records the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .._ids import new_id
from ..errors import FlowDefinitionError
from ..graph import FlowGraph
from ..store import Gate, NewStep, RunEnd, Source
from ..store.db import utcnow

__all__ = ["Plan", "gate", "initial_rows", "plan_completion", "plan_settled_failure"]


@dataclass
class Plan:
    """The effects of one completion, applied atomically by ``Store.complete``."""

    inserts: list[NewStep] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    end: RunEnd | None = None


def gate(flow: FlowGraph, name: str, delta: int) -> Gate:
    """The gate of a join or signal wait ``name``, moved by ``delta``."""
    parents = flow.parents(name)
    stage = flow.steps[name]
    return Gate(
        name=name,
        delta=delta,
        sources=tuple(
            Source(p, flow.is_each(p), flow.is_each(p) and flow.settles(name, p)) for p in parents
        ),
        multi=len(parents) > 1,
        signal=stage.wait_for,
        signal_timeout_ms=stage.wait_timeout_ms,
    )


def _new(flow: FlowGraph, name: str, value: Any, item: int | None = None) -> NewStep:
    stage = flow.steps[name]
    due = None
    if stage.delay_ms:
        due = utcnow() + timedelta(milliseconds=stage.delay_ms)
    return NewStep(
        id=new_id(),
        name=name,
        queue=stage.queue,
        input=value,
        item=item,
        scheduled_at=due,
        delay_ms=stage.delay_ms or None,
    )


def _run_end(flow: FlowGraph) -> RunEnd:
    return RunEnd(tuple(Source(s, flow.is_each(s), False) for s in flow.sinks()))


def initial_rows(flow: FlowGraph, payload: Any) -> tuple[list[NewStep], list[NewStep], list[Gate]]:
    """``(queued, waiting, entry_waits)`` rows of a new run.

    The entry steps are queued, every join and signal wait is created
    ``waiting`` with its counter, and entry steps that wait for a signal
    start waiting now.
    """
    queued = [_new(flow, s.name, payload) for s in flow.entries if not flow.is_join(s.name)]
    waiting = [
        NewStep(
            id=new_id(),
            name=name,
            queue=flow.steps[name].queue,
            input=None,
            pending=flow.gate_size(name),
        )
        for name in flow.order()
        if flow.is_join(name)
    ]
    entry_waits = [gate(flow, s.name, 0) for s in flow.entries if flow.is_join(s.name)]
    return queued, waiting, entry_waits


def plan_completion(flow: FlowGraph, step: str, item: int | None, output: Any) -> Plan:
    """The plan after ``step`` (item ``item``) succeeded with ``output`` (JSON form)."""
    plan = Plan()
    children = flow.children(step)
    if not children:
        plan.end = _run_end(flow)
        return plan
    for child in children:
        if flow.is_join(child):
            plan.gates.append(gate(flow, child, -1))
        elif flow.is_each(child):
            if not isinstance(output, list):
                raise FlowDefinitionError(
                    f"step {step!r} must return a list: {child!r} runs once per item"
                )
            plan.inserts += [_new(flow, child, value, i) for i, value in enumerate(output)]
            # The joins after the fan-out counted it as one parent; it is len(output).
            plan.gates += [gate(flow, g, len(output) - 1) for g in flow.children(child)]
            if not output and not flow.children(child):
                plan.end = _run_end(flow)
        else:
            plan.inserts.append(_new(flow, child, output))
    return plan


def plan_settled_failure(flow: FlowGraph, step: str) -> Plan | None:
    """For a fanned-out item that failed for good: the plan if its joins settle, else ``None``."""
    children = flow.children(step)
    if not children:
        return None
    if not all(flow.settles(c, step) for c in children):
        return None
    return Plan(gates=[gate(flow, c, -1) for c in children])
