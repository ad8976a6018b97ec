"""New step rows: inserted ``queued``, ``waiting``, ``running`` (chained) or ``skipped``.

The statements that change a row's status afterwards are in :mod:`.transitions`,
which re-exports these for its callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from .._ids import new_id
from ..status import RunStatus, StepStatus
from .guards import bind, const
from .rows import NewStep
from .schema import JSONType, Timestamp, runs, steps

__all__ = ["CREATE_RUN", "create_params", "insert_claimed", "insert_skipped", "insert_steps"]

_R = StepStatus.RUNNING

_NEW_RUN = (
    postgresql.insert(runs)
    .values(
        id=bind("rid"),
        flow=bind("flow"),
        key=bind("key"),
        status=const(RunStatus.PENDING.value),
        input=bind("input", JSONType),
        created_at=bind("now", Timestamp),
        priority=bind("priority", sa.Integer),
        deadline_at=bind("deadline", Timestamp),
        trace_context=bind("trace", JSONType),
        fingerprint=bind("fingerprint"),
    )
    .on_conflict_do_nothing()
    .returning(runs.c.id)
    .cte("new_run")
)
_STEP_COLUMNS = ["id", "run_id", "name", "status", "queue", "attempts", "input", "created_at"]
#: PostgreSQL, a submit's usual shape: the run ``pending`` and its one entry step ``queued``
#: in one statement; no row comes back if the run's key (or id) is taken.
CREATE_RUN = (
    steps.insert()
    .from_select(
        [
            "id",
            "run_id",
            "name",
            "status",
            "queue",
            "attempts",
            "input",
            "created_at",
            "scheduled_at",
        ],
        sa.select(
            bind("sid"),
            _NEW_RUN.c.id,
            bind("sname"),
            const(StepStatus.QUEUED.value),
            bind("squeue"),
            sa.literal_column("0"),
            bind("sinput", JSONType),
            bind("now", Timestamp),
            bind("ssched", Timestamp),
        ).select_from(_NEW_RUN),
    )
    .returning(steps.c.id)
)


def create_params(
    run_id: str,
    flow: str,
    key: str | None,
    input: Any,
    now: datetime,
    priority: int | None,
    deadline: datetime | None,
    trace: dict[str, str] | None,
    step: NewStep,
) -> dict[str, Any]:
    """The parameters of :data:`CREATE_RUN` for a run and its one entry step."""
    return {
        "rid": run_id,
        "flow": flow,
        "key": key,
        "input": input,
        "now": now,
        "priority": priority,
        "deadline": deadline,
        "trace": trace,
        "fingerprint": None,  # the caller sets the flow definition's
        "sid": step.id,
        "sname": step.name,
        "squeue": step.queue,
        "sinput": step.input,
        "ssched": step.scheduled_at or now,
    }


def insert_steps(
    conn: Connection,
    run_id: str,
    new: Sequence[NewStep],
    now: datetime,
    status: StepStatus = StepStatus.QUEUED,
) -> None:
    """(new) → queued (due now unless the row says later), or waiting with its counter."""
    if not new:
        return
    queued = status is StepStatus.QUEUED
    conn.execute(
        steps.insert(),
        [
            {
                "id": s.id,
                "run_id": run_id,
                "name": s.name,
                "item": s.item,
                "status": status.value,
                "queue": s.queue,
                "attempts": 0,
                "input": s.input,
                "created_at": now,
                "scheduled_at": (s.scheduled_at or now) if queued else s.scheduled_at,
                "pending": s.pending,
            }
            for s in new
        ],
    )


def insert_claimed(conn: Connection, run_id: str, new: NewStep, now: datetime, claim: Any) -> None:
    """(new) → running: a chained successor, claimed by ``claim`` (message, lease, worker)."""
    message_id, lease_until, worker_id = claim
    conn.execute(
        steps.insert().values(
            id=new.id,
            run_id=run_id,
            name=new.name,
            item=new.item,
            status=_R.value,
            queue=new.queue,
            attempts=1,
            input=new.input,
            created_at=now,
            scheduled_at=new.scheduled_at or now,
            claimed_by=message_id,
            started_at=now,
            lease_until=lease_until,
            worker_id=worker_id,
        )
    )


def insert_skipped(conn: Connection, run_id: str, names: Sequence[str], now: datetime) -> None:
    """(new) → skipped: the steps a Stop never let start, for the timeline."""
    conn.execute(
        steps.insert(),
        [
            {
                "id": new_id(),
                "run_id": run_id,
                "name": name,
                "status": StepStatus.SKIPPED.value,
                "queue": "",
                "attempts": 0,
                # Distinct times keep the timeline in flow order.
                "created_at": now + timedelta(microseconds=i + 1),
                "finished_at": now,
            }
            for i, name in enumerate(names)
        ],
    )
