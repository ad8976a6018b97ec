"""Child runs in the store: started by a waiting step, and waking it when they end.

A step that is another flow (``Workflow.call``) claims its row like any step;
:meth:`Calls.open` then, in one transaction, inserts the child run (unless its
derived key is known) with its first steps and puts the parent's step from
``running`` to ``waiting``: no worker holds it while the child runs. When the
child run ends, :meth:`Calls.wake_parent` puts that step back to ``queued`` (once:
the update is guarded on ``waiting``) for a message to claim it again, and the
claim finds the child over and records its result as the step's outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .._ids import new_id
from ..status import RunStatus, StepStatus
from .db import Database, aware, utcnow
from .guards import RUN_LIVE
from .rows import NewStep
from .schema import runs, steps
from .transitions import insert_steps

__all__ = ["ChildRun", "ChildSpec", "Calls", "Woken"]

_W = StepStatus.WAITING.value


@dataclass(frozen=True)
class ChildSpec:
    """The child run a claimed call step starts: its flow, derived key and first rows."""

    flow: str
    key: str
    input: Any
    first: Sequence[NewStep]
    waiting: Sequence[NewStep] = ()
    deadline_ms: int | None = None
    priority: int | None = None
    trace_context: dict[str, str] | None = None
    fingerprint: str | None = None


@dataclass
class ChildRun:
    """What :meth:`Calls.open` found or made: the child run, and whether it is over.

    ``created``: inserted now (its first steps are to publish). ``deadline_ms``: how
    long until the child's deadline (its own, or its parent's if sooner), if it has one.
    """

    run_id: str
    status: str
    created: bool
    output: Any = None
    error: Any = None
    deadline_ms: int | None = None
    steps: list[NewStep] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.status in RUN_LIVE


@dataclass(frozen=True)
class Woken:
    """A parent step put back to ``queued`` because its child ended: what to publish."""

    flow: str
    run_id: str
    key: str | None
    priority: int | None
    trace: Any
    step_id: str
    name: str
    queue: str


class Calls:
    """Child runs and the steps that wait for them, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def open(
        self, step_id: str, message_id: str, parent_run_id: str, spec: ChildSpec
    ) -> ChildRun | None:
        """The child run of a claimed call step, and the step ``waiting`` while it is live.

        In one transaction: the child run is read (locked) by its key, or inserted with
        its first steps; if it is live, the step goes ``running`` → ``waiting``. A child
        already over leaves the step ``running`` for the caller to record its outcome.
        Returns ``None`` if the step is no longer this message's (nothing changes).
        """
        now = utcnow()
        with self.db.transaction() as conn:
            row = conn.execute(
                sa.select(runs.c.id, runs.c.status, runs.c.output, runs.c.error, runs.c.deadline_at)
                .where(runs.c.flow == spec.flow, runs.c.key == spec.key)
                .with_for_update()
            ).first()
            if row is not None:
                child = ChildRun(row.id, row.status, False, row.output, row.error)
                child.deadline_ms = _left(aware(row.deadline_at), now)
                if child.live and not _wait(conn, step_id, message_id):
                    return None
                # A redrive may have put a new row in the step's place: the child follows it.
                conn.execute(
                    runs.update()
                    .where(runs.c.id == row.id, runs.c.parent_step_id != step_id)
                    .values(parent_step_id=step_id)
                )
                return child
            if not _wait(conn, step_id, message_id):
                return None
            return _insert(conn, step_id, parent_run_id, spec, now)

    def wake_parent(self, child_run_id: str) -> Woken | None:
        """A child run ended: its waiting parent step → ``queued``; ``None`` if there is none."""
        now = utcnow()
        with self.db.transaction() as conn:
            link = conn.execute(
                sa.select(runs.c.parent_run_id, runs.c.parent_step_id).where(
                    runs.c.id == child_run_id
                )
            ).first()
            if link is None or link.parent_step_id is None:
                return None
            woke = conn.execute(
                steps.update()
                .where(steps.c.id == link.parent_step_id, steps.c.status == _W)
                .values(status=StepStatus.QUEUED.value, scheduled_at=now)
                .returning(steps.c.name, steps.c.queue)
            ).first()
            if woke is None:
                return None
            parent = conn.execute(
                sa.select(runs.c.flow, runs.c.key, runs.c.priority, runs.c.trace_context).where(
                    runs.c.id == link.parent_run_id
                )
            ).one()
        return Woken(
            parent.flow,
            link.parent_run_id,
            parent.key,
            parent.priority,
            parent.trace_context,
            link.parent_step_id,
            woke.name,
            woke.queue,
        )

    def live_children(self, run_id: str) -> list[str]:
        """The ids of ``run_id``'s child runs that are still live."""
        with self.db.transaction() as conn:
            return list(
                conn.execute(
                    sa.select(runs.c.id).where(
                        runs.c.parent_run_id == run_id, runs.c.status.in_(RUN_LIVE)
                    )
                ).scalars()
            )

    def stuck(self, limit: int = 500) -> list[str]:
        """Child runs over whose parent step still waits (their process died before
        waking it): the recovery sweep wakes them."""
        with self.db.transaction() as conn:
            return list(
                conn.execute(
                    sa.select(runs.c.id)
                    .join(steps, steps.c.id == runs.c.parent_step_id)
                    .where(steps.c.status == _W, runs.c.status.not_in(RUN_LIVE))
                    .limit(limit)
                ).scalars()
            )

    def children(self, run_id: str) -> list[dict[str, Any]]:
        """``run_id``'s child runs, oldest first: id, flow, status, and the step and item
        (``None`` once a redrive replaced the step's row and no claim has found the child)."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(runs.c.id, runs.c.flow, runs.c.status, steps.c.name, steps.c.item)
                .select_from(runs.outerjoin(steps, steps.c.id == runs.c.parent_step_id))
                .where(runs.c.parent_run_id == run_id)
                .order_by(runs.c.created_at, runs.c.id)
            ).all()
        return [
            {"id": r[0], "flow": r[1], "status": r[2], "step": r[3], "item": r[4]} for r in rows
        ]

    def parent(self, run_id: str) -> dict[str, Any] | None:
        """The run and step that started ``run_id``, if it is a child run."""
        with self.db.transaction() as conn:
            row = conn.execute(
                sa.select(runs.c.parent_run_id, steps.c.name, steps.c.item)
                .select_from(runs.outerjoin(steps, steps.c.id == runs.c.parent_step_id))
                .where(runs.c.id == run_id, runs.c.parent_run_id.is_not(None))
            ).first()
        return None if row is None else {"id": row[0], "step": row[1], "item": row[2]}


def _wait(conn: Connection, step_id: str, message_id: str) -> bool:
    """running → waiting: the call step's child is live; no worker holds it meanwhile."""
    res = conn.execute(
        steps.update()
        .where(
            steps.c.id == step_id,
            steps.c.status == StepStatus.RUNNING.value,
            steps.c.claimed_by == message_id,
        )
        .values(status=_W, scheduled_at=None, lease_until=None, worker_id=None)
    )
    return bool(res.rowcount == 1)


def _insert(
    conn: Connection, step_id: str, parent_run_id: str, spec: ChildSpec, now: datetime
) -> ChildRun:
    """The child run and its first steps; its deadline is its own or its parent's, the sooner."""
    parent_deadline = aware(
        conn.execute(sa.select(runs.c.deadline_at).where(runs.c.id == parent_run_id)).scalar()
    )
    own = None if spec.deadline_ms is None else now + timedelta(milliseconds=spec.deadline_ms)
    deadline = min((d for d in (own, parent_deadline) if d is not None), default=None)
    run_id = new_id()
    conn.execute(
        runs.insert().values(
            id=run_id,
            flow=spec.flow,
            key=spec.key,
            status=RunStatus.PENDING.value,
            input=spec.input,
            created_at=now,
            priority=spec.priority,
            deadline_at=deadline,
            trace_context=spec.trace_context,
            fingerprint=spec.fingerprint,
            parent_run_id=parent_run_id,
            parent_step_id=step_id,
        )
    )
    insert_steps(conn, run_id, spec.first, now)
    insert_steps(conn, run_id, spec.waiting, now, status=StepStatus.WAITING)
    child = ChildRun(run_id, RunStatus.PENDING.value, True, steps=list(spec.first))
    child.deadline_ms = _left(deadline, now)
    return child


def _left(deadline: datetime | None, now: datetime) -> int | None:
    return None if deadline is None else max(0, int((deadline - now).total_seconds() * 1000))
