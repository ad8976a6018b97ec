"""The attempt log: a row for each attempt of a step that did not succeed.

The hot path never writes here: a step's last attempt is its own row in
``flowkit_steps``. An attempt is logged only when it ends without succeeding,
in the transaction that records that end: retried
(:meth:`Runs.schedule_retry <flowkit.store.Runs.schedule_retry>`), failed for
good (:meth:`Runs.fail <flowkit.store.Runs.fail>`), or lost, its worker gone
before it recorded an outcome (a takeover by the step's redelivered message in
:meth:`Runs.claim <flowkit.store.Runs.claim>`, or the recovery sweep re-queueing
it past its lease). The guarded statements of :mod:`.transitions` return the
row's attempt number, start and worker before the next claim overwrites them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._ids import new_id
from ..records import AttemptInfo
from ..status import StepStatus
from .db import aware
from .schema import attempts, steps

__all__ = [
    "ATTEMPT_COLUMNS",
    "FAILED",
    "LOST",
    "RETRIED",
    "attempts_of",
    "log_attempts",
    "running_attempt",
]

RETRIED, FAILED, LOST = "retried", "failed", "lost"
#: What the log copies from a step row: its attempt, as that attempt left it.
ATTEMPT_COLUMNS = (
    steps.c.id,
    steps.c.run_id,
    steps.c.attempts,
    steps.c.started_at,
    steps.c.worker_id,
)


def running_attempt(conn: Connection, step_id: str) -> Any:
    """The step's attempt row if it is running, locked: what a takeover's lost attempt was."""
    stmt = sa.select(*ATTEMPT_COLUMNS).where(
        steps.c.id == step_id, steps.c.status == StepStatus.RUNNING.value
    )
    return conn.execute(stmt.with_for_update()).first()


def log_attempts(
    conn: Connection, rows: Iterable[Any], outcome: str, now: datetime, error: Any = None
) -> None:
    """Log one attempt per row (``id``, ``run_id``, ``attempts``, ``started_at``, ``worker_id``
    of the step as it was during that attempt), ended ``now`` with ``outcome``."""
    values = [
        {
            "id": new_id(),
            "step_id": r.id,
            "run_id": r.run_id,
            "attempt": int(r.attempts or 0),
            "worker_id": r.worker_id,
            "started_at": r.started_at,
            "finished_at": now,
            "outcome": outcome,
            "error": error,
        }
        for r in rows
    ]
    if values:
        conn.execute(attempts.insert(), values)


def attempts_of(conn: Connection, run_id: str) -> list[AttemptInfo]:
    """The run's logged attempts, oldest first (on the ``run_id`` index)."""
    rows = conn.execute(
        sa.select(attempts)
        .where(attempts.c.run_id == run_id)
        .order_by(attempts.c.started_at, attempts.c.attempt, attempts.c.id)
    ).all()
    return [
        AttemptInfo(
            step_id=r.step_id,
            run_id=r.run_id,
            attempt=r.attempt,
            outcome=r.outcome,
            worker_id=r.worker_id,
            started_at=aware(r.started_at),
            finished_at=aware(r.finished_at),
            error=r.error,
        )
        for r in rows
    ]
