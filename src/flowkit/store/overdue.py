"""Steps to publish again, with what their messages carry from their run: the select every
recovery rule and the concurrency hand-off start from, and the forced pass's query
(``flowkit recover --force``): steps overdue by age alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..status import StepStatus
from .guards import RUN_LIVE, STEP_PENDING
from .rows import DueStep
from .schema import runs, steps

__all__ = ["due_query", "due_select", "due_step"]


def due_select() -> Any:
    """Steps joined to their runs, with what a message for each needs (a :class:`DueStep`);
    the steps of stranded runs left out."""
    return (
        sa.select(
            steps.c.id,
            steps.c.run_id,
            steps.c.name,
            steps.c.queue,
            steps.c.status,
            steps.c.worker_id,
            runs.c.flow,
            runs.c.key,
            runs.c.priority,
            runs.c.trace_context,
        )
        .join(runs, runs.c.id == steps.c.run_id)
        .where(
            # A stranded run's steps wait for `flowkit retry --from` (docs/deploys.md): never
            # re-published, so no worker retries them in a loop.
            runs.c.stranded.is_(None)
        )
    )


def due_step(r: Any, status: str) -> DueStep:
    """The :class:`DueStep` of a :func:`due_select` row, published as ``status``."""
    return DueStep(
        r.id, r.run_id, r.name, r.queue, r.flow, r.key, status, r.priority, r.trace_context
    )


def due_query(cutoff: datetime, lease_cutoff: datetime, limit: int) -> Any:
    """Queued steps due since ``cutoff`` (or signal waits past it), and running steps whose
    lease ends before ``lease_cutoff``, oldest first: the forced recovery pass's rows."""
    return (
        due_select()
        .where(
            runs.c.status.in_(RUN_LIVE),
            sa.or_(
                sa.and_(
                    # queued and due; or waiting for a signal past its deadline
                    steps.c.status.in_(STEP_PENDING),
                    steps.c.scheduled_at <= cutoff,
                ),
                sa.and_(
                    steps.c.status == StepStatus.RUNNING.value,
                    steps.c.lease_until < lease_cutoff,
                ),
            ),
        )
        .order_by(steps.c.scheduled_at)
        .limit(limit)
    )
