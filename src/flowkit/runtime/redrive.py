"""Redrive: run a finished run again from a step, reusing what came before it.

The step to start from (the failed one by default) and every step after it
are reset; the steps before it keep their stored outputs and do not run
again. A failed fan-out item is retried with the other failed or skipped
items while the items that succeeded are kept.

A *stranded* run (live, but its flow's deployed definition cannot go on with it:
:mod:`.stranded`) is retried the same way onto the new definition, from the step
named: its open steps the flow no longer has are removed, and every other step
that stranded it must be the start or after it. The retry clears the mark and
records the deployed fingerprint on the run.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace

from .. import tracing
from .._ids import new_id
from ..errors import NotFoundError, RunNotFound, RunStateError
from ..graph import FlowGraph
from ..records import RetryPreview, RunInfo, StepInfo
from ..status import StepStatus
from ..store import Gate, NewStep, OpenStep
from .engine import Engine
from .plan import gate
from .publisher import Outgoing, RunRef
from .stranded import step_reason

__all__ = ["RedrivePlan", "plan_redrive", "redrive"]


def _descendants(flow: FlowGraph, start: str) -> list[str]:
    seen: list[str] = []
    todo = [start]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.append(n)
        todo += flow.children(n)
    order = flow.order()
    return sorted(seen, key=order.index)


def _pick_start(flow: FlowGraph, steps: list[StepInfo], run_id: str) -> str:
    order = flow.order()
    bad = [s for s in steps if s.status in (StepStatus.FAILED, StepStatus.CANCELLED)]
    if not bad:
        raise RunStateError(
            f"run {run_id} has no failed or cancelled step: name one to start from (--from STEP)"
        )
    return min(bad, key=lambda s: order.index(s.name) if s.name in order else 1 << 30).name


@dataclass(frozen=True)
class RedrivePlan:
    """What a redrive will do, computed from the stored run without changing anything.

    :meth:`preview` is what ``flowkit retry --dry-run`` and ``Run.retry_preview`` show;
    :func:`redrive` applies the same plan.
    """

    run: RunInfo
    flow: FlowGraph
    start: str
    reset: list[str]
    restart: list[tuple[NewStep, Gate | None]]
    waiting: list[NewStep]
    keep_items: str | None
    kept: int
    signal_waits: list[Gate]
    #: a stranded run's reason, and its open steps of names the flow no longer has
    stranded: str | None = None
    dropped: tuple[str, ...] = ()
    #: a stranded run's steps with a stored output (the others have none to reuse)
    done: frozenset[str] = frozenset()

    def preview(self) -> RetryPreview:
        """The steps that run again, and those whose stored outputs are reused."""
        order = self.flow.order()
        return RetryPreview(
            run_id=self.run.id,
            start=self.start,
            rerun=tuple(self.reset),
            reused=tuple(
                n
                for n in order
                if n not in self.reset and (self.stranded is None or n in self.done)
            ),
            kept_items=self.kept,
            stranded=self.stranded,
            dropped=self.dropped,
        )


def plan_redrive(engine: Engine, run_id: str, from_step: str | None = None) -> RedrivePlan:
    """The plan to re-run a finished run from ``from_step`` (default: its first failed step).

    Raises:
        RunNotFound: no such run.
        RunStateError: the run is still live, or has nothing to retry.
        NotFoundError: ``from_step`` is not a step of the run's flow.
    """
    info = engine.store.get_run(run_id)
    state = engine.store.strands.state(run_id)
    if info is None or state is None:
        raise RunNotFound(f"no run {run_id!r}")
    stranded = None if info.status.terminal else state[1]
    if not info.status.terminal and stranded is None:
        raise RunStateError(f"run {run_id} is still {info.status.value}: only a finished run")
    if stranded is not None and from_step is None:
        raise RunStateError(
            f"run {run_id} is stranded ({stranded}): name the step of the new definition "
            "to start from (--from STEP)"
        )
    flow = engine.flow(info.flow)
    steps = engine.store.get_steps(run_id)
    if from_step is not None and from_step not in flow.steps:
        raise NotFoundError(
            f"{flow.name!r} has no step {from_step!r} (steps: {', '.join(flow.steps)})"
        )
    start = from_step or _pick_start(flow, steps, run_id)
    reset = _descendants(flow, start)
    keep_items = None
    items = [s for s in steps if s.name == start and s.item is not None]
    succeeded = any(s.status is StepStatus.SUCCEEDED for s in items)
    if flow.is_each(start) and from_step is None and succeeded:
        keep_items = start
    again = [s for s in steps if keep_items and s.name == keep_items]
    requeued = sum(1 for s in again if s.status is not StepStatus.SUCCEEDED)
    outputs = {s.name: s.output for s in steps if s.item is None}
    restart: list[tuple[NewStep, Gate | None]] = []
    if keep_items is None:
        restart = _restart_rows(flow, start, outputs, info.input)
    waiting = _waiting_rows(flow, start, reset, restart, keep_items, requeued)
    signal_waits = [
        gate(flow, w.name, 0) for w in waiting if flow.steps[w.name].wait_for and w.pending == 1
    ]
    kept = len(again) - requeued
    plan = RedrivePlan(info, flow, start, reset, restart, waiting, keep_items, kept, signal_waits)
    return plan if stranded is None else _onto_deployed(plan, stranded, steps)


def _onto_deployed(plan: RedrivePlan, stranded: str, steps: list[StepInfo]) -> RedrivePlan:
    """A stranded run's plan: its obsolete open steps dropped, the start checked to cover
    every other step that stranded it.

    Raises:
        RunStateError: a step that stranded the run is neither the start nor after it.
    """
    flow, open_steps = plan.flow, [s for s in steps if not s.status.terminal]
    dropped = tuple(dict.fromkeys(s.name for s in open_steps if s.name not in flow.steps))
    for s in open_steps:
        row = OpenStep(s.id, s.name, s.status.value, s.input, s.item)
        why = step_reason(flow, row)
        if why is not None and s.name in flow.steps and s.name not in plan.reset:
            raise RunStateError(
                f"run {plan.run.id}: {why}, and it is not after {plan.start!r}: retry from "
                f"{s.name!r} or a step before it"
            )
    for new, joined in plan.restart:
        if joined is not None:
            continue  # a join's input is gathered when it opens (and checked then)
        why = step_reason(flow, OpenStep(new.id, new.name, "queued", new.input, new.item))
        if why is not None:
            raise RunStateError(
                f"run {plan.run.id}: from the outputs stored before it, {why}: retry from "
                "a step before it"
            )
    done = frozenset(s.name for s in steps if s.status is StepStatus.SUCCEEDED)
    return replace(plan, stranded=stranded, dropped=dropped, done=done)


def redrive(engine: Engine, run_id: str, from_step: str | None = None) -> list[str]:
    """Re-run a finished run from ``from_step`` (default: its first failed step).

    Returns:
        the names of the steps queued again.

    Raises:
        RunNotFound: no such run.
        RunStateError: the run is still live, or has nothing to retry.
        NotFoundError: ``from_step`` is not a step of the run's flow.
        BrokerError: the broker cannot be reached; nothing changed.
    """
    plan = plan_redrive(engine, run_id, from_step)
    engine.publisher.ready()  # nothing changes while the broker is down
    _redrive_children(engine, plan)
    # The run's trace goes on from its stored context; the caller's span is linked.
    attributes = {
        "flowkit.flow": plan.flow.name,
        "flowkit.run_id": run_id,
        "flowkit.step": plan.start,
    }
    with tracing.span(
        "flowkit.redrive",
        parent=tracing.clean(plan.run.trace_context),
        kind="producer",
        attributes=attributes,
        link_caller=True,
    ) as span:
        return _apply(engine, plan, span.carrier)


def _redrive_children(engine: Engine, plan: RedrivePlan) -> None:
    """A child flow's step that runs again: its child runs that did not succeed are retried
    first; those that succeeded are kept, and the step's claim finds them by key."""
    called = {n for n in plan.reset if plan.flow.steps[n].child is not None}
    if not called:
        return
    for child in engine.store.calls.children(plan.run.id):
        if (child["step"] is None or child["step"] in called) and child["status"] in _OVER:
            with suppress(RunStateError):  # nothing in it to retry: the step fails again
                redrive(engine, child["id"])


_OVER = ("failed", "cancelled", "timed_out")


def _apply(engine: Engine, plan: RedrivePlan, trace: dict[str, str] | None) -> list[str]:
    flow, store, run_id = plan.flow, engine.store, plan.run.id
    published = store.control.redrive(
        run_id,
        reset=plan.reset,
        restart=plan.restart,
        waiting=plan.waiting,
        keep_items=plan.keep_items,
        clear_signals=[flow.steps[n].wait_for or "" for n in plan.reset if flow.steps[n].wait_for],
        signal_waits=plan.signal_waits,
        stranded=plan.stranded is not None,
        obsolete=plan.dropped,
        fingerprint=flow.fingerprint,
    )
    # A retried run gets its flow's full time again (a timed-out run too).
    store.control.reset_deadline(run_id, flow.timeout_ms)
    run = RunRef(flow.name, run_id, plan.run.key, plan.run.priority, trace)
    engine.publisher.publish(run, [Outgoing.of(s) for s in published])
    if flow.timeout_ms:
        engine.publisher.publish_control("deadline", run, flow.timeout_ms)
    names = {s.name for s in published} | {g.name for g in plan.signal_waits}
    return sorted(names, key=flow.order().index)


def _waiting_rows(
    flow: FlowGraph,
    start: str,
    reset: list[str],
    restart: list[tuple[NewStep, Gate | None]],
    keep_items: str | None,
    requeued: int,
) -> list[NewStep]:
    """The joins after ``start``, re-created waiting with their counters.

    A join that is the start itself and needs nothing more is opened at once
    (appended to ``restart``).
    """
    waiting = []
    for name in reset:
        if not flow.is_join(name):
            continue
        pending = 1 if flow.steps[name].wait_for else 0
        for p in flow.parents(name):
            if p == keep_items:
                pending += requeued
            elif p == start and flow.is_each(p):
                pending += len(restart)  # the items are queued now, not spawned later
            elif p in reset:
                pending += 1
        if name == start and pending == 0:
            restart.append((_row(flow, name), gate(flow, name, 0)))
            continue
        waiting.append(
            NewStep(
                id=new_id(), name=name, queue=flow.steps[name].queue, input=None, pending=pending
            )
        )
    return waiting


def _row(flow: FlowGraph, name: str, value: object = None, item: int | None = None) -> NewStep:
    return NewStep(id=new_id(), name=name, queue=flow.steps[name].queue, input=value, item=item)


def _restart_rows(
    flow: FlowGraph, start: str, outputs: dict[str, object], run_input: object
) -> list[tuple[NewStep, Gate | None]]:
    if flow.is_join(start):
        return []  # re-created waiting (or opened) by the caller
    parents = flow.parents(start)
    if not parents:
        return [(_row(flow, start, run_input), None)]
    parent_output = outputs.get(parents[0])
    if flow.is_each(start):
        if not isinstance(parent_output, list):
            raise RunStateError(
                f"cannot fan {start!r} out again: {parents[0]!r} has no list output"
            )
        return [(_row(flow, start, v, i), None) for i, v in enumerate(parent_output)]
    return [(_row(flow, start, parent_output), None)]
