"""Child flows in the runtime: a step that starts another flow's run and waits for it.

A call step (``Workflow.call``) is claimed like any step, then, instead of a
function, :func:`start` runs:

1. The child run is stored by :meth:`Calls.open <flowkit.store.Calls.open>` with a key
   derived from the parent run, the step and the item (:func:`child_key`), in the
   same transaction that puts the parent step ``waiting``; its entry steps are
   published after the commit. The worker thread is free again at once.
2. When the child run ends, :meth:`Children.ended` (on the Engine's ``run_finished``
   path) puts the parent step back to ``queued`` and publishes it.
3. That message claims the step again; :func:`start` finds the child over and
   records its output as the step's outcome (successors and joins move as for any
   step), or its failure as the step's final failure (an item of a ``Settled``
   join is an item failure).

A redelivered or woken step finds the child by its key, so a step never starts a
second child. A run that ends other than ``succeeded`` cancels its live children.
If a process dies between a child's end and the wake, the recovery sweep wakes the
step (:meth:`Children.sweep`). See ``docs/child-flows.md`` and ``docs/runtime.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import tracing
from ..errors import FlowkitError, RunFailed
from ..graph import FlowGraph
from ..status import RunStatus
from ..store import ChildRun, ChildSpec, Outcome, Store
from . import aio
from .outcomes import Failure
from .plan import initial_rows
from .publisher import Outgoing, Publisher, RunRef
from .validation import check_input

if TYPE_CHECKING:
    from ..store import Claim
    from .execute import Job, Next, StepRunner

__all__ = ["Children", "child_key", "start"]

log = logging.getLogger("flowkit.engine")


def child_key(run_id: str, step: str, item: int | None) -> str:
    """The key of the child run that step ``step`` (item ``item``) of ``run_id`` starts."""
    return f"{run_id}:{step}:{'-' if item is None else item}"


def start(runner: StepRunner, job: Job, claim: Claim) -> Next:
    """A claimed call step: start (or find) its child run; record its result if it is over."""
    child: FlowGraph = job.stage.child.compile()
    ctx = runner._context(job, claim, None)
    step = aio.Step(job, claim, None, ctx, time.monotonic())
    try:
        payload = check_input(child, claim.input, runner.limits)
    except FlowkitError as exc:  # the parent's stored output no longer fits the child
        return runner.finish(step, Failure(exc, None), None)
    run = job.got.run
    first, waiting, _ = initial_rows(child, payload)
    spec = ChildSpec(
        child.name,
        child_key(job.run_id, job.stage.name, claim.item),
        payload,
        first,
        waiting,
        deadline_ms=child.timeout_ms,
        priority=run.priority,
        trace_context=run.trace,
        fingerprint=child.fingerprint,
    )
    found = runner.store.calls.open(job.step_id, job.got.message_id, job.run_id, spec)
    if found is None:
        return None  # the step is no longer this message's
    if found.live:
        _publish_child(runner, child, spec, found)
        return None
    return runner.finish(step, _result(runner, job, claim, ctx, found), None)


def _publish_child(runner: StepRunner, child: FlowGraph, spec: ChildSpec, found: ChildRun) -> None:
    ref = RunRef(child.name, found.run_id, spec.key, spec.priority, spec.trace_context)
    if found.created:
        runner.publisher.publish(ref, [Outgoing.of(s) for s in found.steps])
        if found.deadline_ms is not None:
            runner.publisher.publish_control("deadline", ref, found.deadline_ms)
        return
    # Found by its key (a redelivered step): its entry steps' messages may never have gone.
    queued = runner.store.runs.queued_steps(found.run_id, [e.name for e in child.entries])
    if queued:
        runner.publisher.publish(ref, [Outgoing(i, n, q) for i, n, q in queued])


def _result(
    runner: StepRunner, job: Job, claim: Claim, ctx: Any, found: ChildRun
) -> Outcome | Failure:
    """The step's outcome from its finished child: its output, or its failure (final)."""
    if found.status == RunStatus.SUCCEEDED.value:
        try:
            return runner.settle(job, claim, ctx, found.output)
        except Exception as exc:  # an output that is not the declared type, or too large
            return Failure(exc, None)
    error = found.error if isinstance(found.error, dict) else {}
    failed = RunFailed(
        found.run_id,
        step=error.get("step"),
        error_type=str(error.get("type") or f"run {found.status}"),
        error_message=str(error.get("message") or f"the child run of {job.stage.child.name!r}"),
    )
    return Failure(failed, None)


class Children:
    """The Engine's part of child flows: wake a parent step, cancel children, sweep.

    Parameters:
        flows: the engine's flows; nothing is read for a flow that no step calls.
        store: the database.
        publisher: where the woken steps' messages go.
    """

    def __init__(self, flows: Iterable[FlowGraph], store: Store, publisher: Publisher) -> None:
        graphs = list(flows)
        calls = {f.name: [s.child.name for s in f.steps.values() if s.child] for f in graphs}
        #: flows with a call step: their end cancels their live children
        self.callers = frozenset(n for n, c in calls.items() if c)
        #: flows some step calls: their end may wake a waiting step
        self.called = frozenset(c for cs in calls.values() for c in cs)
        self.store = store
        self.publisher = publisher

    def ended(
        self, run_id: str, flow: str, status: RunStatus, cancel: Callable[[str], bool]
    ) -> None:
        """A run ended in this process: cancel its live children (unless it succeeded),
        and wake the step waiting for it (if it is a child run). A cancel is looked up
        whatever the flow: ``flowkit cancel`` may run without the flows' definitions."""
        cancelled = status is RunStatus.CANCELLED
        if (flow in self.callers or cancelled) and status is not RunStatus.SUCCEEDED:
            for child in self.store.calls.live_children(run_id):
                log.info("run %s is %s: cancelling its child run %s", run_id, status.value, child)
                cancel(child)
        if flow in self.called or cancelled:
            self.wake(run_id)

    def wake(self, child_run_id: str) -> bool:
        """Queue and publish the step waiting for ``child_run_id``, if one still waits."""
        woken = self.store.calls.wake_parent(child_run_id)
        if woken is None:
            return False
        trace = tracing.clean(woken.trace)
        ref = RunRef(woken.flow, woken.run_id, woken.key, woken.priority, trace)
        self.publisher.publish(ref, [Outgoing(woken.step_id, woken.name, woken.queue)])
        return True

    def sweep(self, limit: int = 500) -> int:
        """Wake the steps still waiting for a child run that is over; how many."""
        if not self.called:
            return 0
        return sum(self.wake(run_id) for run_id in self.store.calls.stuck(limit))
