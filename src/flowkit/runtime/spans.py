"""What one step attempt adds to logs and traces: its fields, and its span.

:func:`attempt` wraps a claimed attempt (parse, call, record, publish). Inside
it, log records carry the run id, step and attempt (:func:`flowkit.logs.step_fields`),
and the ``flowkit.step <step>`` span is current: a child of the context its
message carried, linked to every item's span for a join. The messages published
inside carry this span's context, so the successors become its children.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import dramatiq

from .. import tracing
from ..graph import FlowGraph
from ..logs import step_fields
from ..store import Claim, Store
from .outcomes import StepFailed
from .publisher import RunRef

__all__ = ["attempt", "outcome"]


@contextmanager
def attempt(
    flow: FlowGraph, step: str, run: RunRef, claim: Claim, message_id: str, store: Store
) -> Iterator[RunRef]:
    """The span and log fields of one attempt; yields the run its messages carry.

    A retry (:class:`dramatiq.Retry`) or a final failure (:class:`.StepFailed`)
    leaves the block after :func:`outcome` recorded the attempt's own error on the
    span; anything else leaving it (the database gone) is recorded as it goes.
    """
    stage = flow.steps[step]
    attributes: dict[str, str | int | None] = {
        "flowkit.flow": flow.name,
        "flowkit.step": step,
        "flowkit.run_id": run.run_id,
        "flowkit.attempt": claim.attempts,
        "flowkit.item": claim.item,
        "messaging.destination.name": stage.queue,
        "messaging.message.id": message_id,
    }
    fields = step_fields(
        flow=flow.name, run_id=run.run_id, step=step, attempt=claim.attempts, item=claim.item
    )
    with (
        fields,
        tracing.span(
            f"flowkit.step {step}",
            parent=run.trace,
            kind="consumer",
            attributes=attributes,
            quiet=(dramatiq.Retry, StepFailed),
        ) as span,
    ):
        if span.recording and flow.is_join(step):
            for carrier in store.step_traces(run.run_id, flow.parents(step)):
                found = tracing.clean(carrier)
                if found:
                    span.link(found)
        yield replace(run, trace=span.carrier or run.trace)


def outcome(name: str, exc: BaseException | None = None) -> None:
    """Note how the current attempt ended on its span (``succeeded``, ``retried``, ...)."""
    current = tracing.Span.current()
    current.set("flowkit.outcome", name)
    if exc is not None:
        current.fail(exc)
