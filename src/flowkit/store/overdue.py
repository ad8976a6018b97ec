"""The forced recovery pass's query: steps overdue by age alone (``flowkit recover --force``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..status import StepStatus
from .guards import RUN_LIVE, STEP_PENDING
from .schema import runs, steps

__all__ = ["due_query"]


def due_query(cutoff: datetime, lease_cutoff: datetime, limit: int) -> Any:
    """Queued steps due since ``cutoff`` (or signal waits past it), and running steps whose
    lease ends before ``lease_cutoff``, oldest first: the forced recovery pass's rows."""
    return (
        sa.select(
            steps.c.id,
            steps.c.run_id,
            steps.c.name,
            steps.c.queue,
            steps.c.status,
            runs.c.flow,
            runs.c.key,
            runs.c.priority,
            runs.c.trace_context,
        )
        .join(runs, runs.c.id == steps.c.run_id)
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
