"""What a step's completion changes in its run, computed from the flow's graph.

Pure functions: the flow says who follows whom; the plan says which rows to
insert, which join counters to move and whether the run may be finishing.
The store applies a plan in the same transaction that records the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._ids import new_id
from ..errors import FlowDefinitionError
from ..flows import Flow
from ..store import Gate, NewStep, RunEnd, Source

__all__ = ["Plan", "initial_rows", "plan_completion"]


@dataclass
class Plan:
    """The effects of one completion, applied atomically by ``Store.complete``."""

    inserts: list[NewStep] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    end: RunEnd | None = None


def _gate(flow: Flow, name: str, delta: int) -> Gate:
    parents = flow.parents(name)
    return Gate(
        name=name,
        delta=delta,
        sources=tuple(
            Source(p, flow.is_each(p), flow.is_each(p) and flow.settles(name, p)) for p in parents
        ),
        multi=len(parents) > 1,
    )


def _run_end(flow: Flow) -> RunEnd:
    return RunEnd(tuple(Source(s, flow.is_each(s), False) for s in flow.sinks()))


def initial_rows(flow: Flow, payload: Any) -> tuple[list[NewStep], list[NewStep]]:
    """``(queued, waiting)`` rows of a new run: the entry steps, and every join."""
    queued = [NewStep(id=new_id(), name=s.name, queue=s.queue, input=payload) for s in flow.entries]
    waiting = [
        NewStep(
            id=new_id(),
            name=name,
            queue=flow.steps[name].queue,
            input=None,
            pending=len(flow.parents(name)),
        )
        for name in flow.order()
        if flow.is_join(name)
    ]
    return queued, waiting


def plan_completion(flow: Flow, step: str, item: int | None, output: Any) -> Plan:
    """The plan after ``step`` (item ``item``) succeeded with ``output`` (JSON form)."""
    plan = Plan()
    children = flow.children(step)
    if not children:
        plan.end = _run_end(flow)
        return plan
    for child in children:
        stage = flow.steps[child]
        if flow.is_join(child):
            plan.gates.append(_gate(flow, child, -1))
        elif flow.is_each(child):
            if not isinstance(output, list):
                raise FlowDefinitionError(
                    f"step {step!r} must return a list: {child!r} runs once per item"
                )
            plan.inserts += [
                NewStep(id=new_id(), name=child, queue=stage.queue, input=value, item=i)
                for i, value in enumerate(output)
            ]
            # The joins after the fan-out counted it as one parent; it is len(output).
            plan.gates += [_gate(flow, g, len(output) - 1) for g in flow.children(child)]
            if not output and not flow.children(child):
                plan.end = _run_end(flow)
        else:
            plan.inserts.append(NewStep(id=new_id(), name=child, queue=stage.queue, input=output))
    return plan


def plan_settled_failure(flow: Flow, step: str) -> Plan | None:
    """For a fanned-out item that failed for good: the plan if its joins settle, else ``None``."""
    children = flow.children(step)
    if not children:
        return None
    if not all(flow.settles(c, step) for c in children):
        return None
    return Plan(gates=[_gate(flow, c, -1) for c in children])
