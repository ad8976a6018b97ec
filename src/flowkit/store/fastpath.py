"""PostgreSQL's one-round-trip versions of the two statements every step pays for.

On PostgreSQL a step's claim is a single autocommitted ``UPDATE … RETURNING``,
and its completion with one successor a single statement whose CTE records the
output and inserts the successor only if that UPDATE matched: the same guarded
transitions as :mod:`.repo`, atomic as one statement, without ``BEGIN`` and
``COMMIT`` round trips. Everything else (joins, run ends, limits, SQLite) takes
the general path.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import StepStatus
from .gates import run_is_live
from .rows import NewStep
from .schema import JSONType, steps

_LIVE_STEP = (StepStatus.QUEUED.value, StepStatus.RUNNING.value)
# A message may arrive this early for its step's due time (clock skew, jitter).
_EARLY = timedelta(milliseconds=500)


def claim_statement(
    step_id: str,
    message_id: str,
    *,
    lease_ms: int,
    redelivered: bool,
    now: datetime,
    limit_key: str | None = None,
) -> Any:
    """The guarded claim: ``UPDATE … RETURNING`` the step if this message may run it."""
    return (
        steps.update()
        .where(
            steps.c.id == step_id,
            run_is_live(now),
            # The row decides when a timer is due; an early message is re-sent.
            sa.or_(steps.c.scheduled_at.is_(None), steps.c.scheduled_at <= now + _EARLY),
            sa.or_(
                steps.c.status == StepStatus.QUEUED.value,
                sa.and_(
                    steps.c.status == StepStatus.RUNNING.value,
                    steps.c.claimed_by == message_id,
                    sa.true() if redelivered else sa.false(),
                ),
            ),
        )
        .values(
            status=StepStatus.RUNNING.value,
            attempts=steps.c.attempts + 1,
            claimed_by=message_id,
            started_at=now,
            lease_until=now + timedelta(milliseconds=lease_ms),
            limit_key=limit_key,
        )
        .returning(
            steps.c.run_id,
            steps.c.name,
            steps.c.attempts,
            steps.c.input,
            steps.c.item,
            steps.c.usage,
        )
    )


def complete_with_successor(
    conn: Connection,
    *,
    step_id: str,
    message_id: str,
    run_id: str,
    output: Any,
    usage: Any,
    successor: NewStep,
    now: datetime,
) -> bool:
    """Record the output and insert the successor in one statement; False if not ours."""
    done = (
        steps.update()
        .where(steps.c.id == step_id, steps.c.status.in_(_LIVE_STEP), run_is_live(now))
        .values(
            status=StepStatus.SUCCEEDED.value,
            output=output,
            error=None,
            claimed_by=message_id,
            finished_at=now,
            lease_until=None,
            usage=usage,
        )
        .returning(steps.c.id)
        .cte("done")
    )
    values = sa.select(
        sa.literal(successor.id, sa.String),
        sa.literal(run_id, sa.String),
        sa.literal(successor.name, sa.String),
        sa.literal(successor.item, sa.Integer),
        sa.literal(StepStatus.QUEUED.value, sa.String),
        sa.literal(successor.queue, sa.String),
        sa.literal(0, sa.Integer),
        sa.literal(successor.input, JSONType),
        sa.literal(now, sa.DateTime(timezone=True)),
        sa.literal(successor.scheduled_at or now, sa.DateTime(timezone=True)),
    ).select_from(done)
    result = conn.execute(
        steps.insert()
        .from_select(
            [
                "id",
                "run_id",
                "name",
                "item",
                "status",
                "queue",
                "attempts",
                "input",
                "created_at",
                "scheduled_at",
            ],
            values,
        )
        .returning(steps.c.id)
    ).first()
    return result is not None
