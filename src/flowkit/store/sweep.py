"""The recovery sweep's statements: which steps lost their message, from evidence on rows.

One pass (:meth:`Sweep.run_pass`) is one transaction, held by one process at a
time (on PostgreSQL a transaction-level advisory lock; SQLite serializes its
writers), bounded by ``limit`` rows per rule. It finds

* **running steps of a dead worker**: their ``worker_id`` names a worker whose
  heartbeat is older than ``stale_after``, or that stopped (or whose row is gone);
* **running steps past their lease** (a step claimed without a worker id, or a
  worker whose heartbeat goes on while the step hangs);
* **queued steps whose message is gone**, and signal waits past their timeout
  whose timer is gone. The evidence is a live worker consuming the step's queue
  with a thread free, without a break, since before the step was published
  (``flowkit_workers.free_since``): RabbitMQ hands a ready message to a consumer
  with room, so that queue held no ready message published before the worker's
  heartbeat (less :data:`SETTLE`). Age alone never re-publishes, so a healthy
  backlog, whose workers are all busy, is left alone;
* **queued steps never published** (``republishes`` is :data:`UNSENT`): entry steps
  stored in a host application's transaction on its bare ``Connection``
  (:mod:`.outbox`), which no process publishes after the commit. They need no
  evidence: the first pass after their commit publishes them.

Each step it returns is marked (``republished_at``, ``republishes``) in the same
transaction, and a queued step is never re-published twice within its publish
lease (:data:`LEASES`: 1, 2, 4, ... minutes, capped at an hour), so a step whose
copy waits in a busy worker's prefetch costs a few duplicates, not a flood.
The running steps are put back to ``queued`` with their lost attempt logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import StepStatus
from .attempts import ATTEMPT_COLUMNS, LOST, log_attempts
from .db import Database, aware
from .guards import RUN_LIVE, STEP_PENDING
from .overdue import due_select, due_step
from .rows import DueStep
from .schema import Timestamp, runs, steps, workers

__all__ = ["DUTY_LOCK", "LEASES", "SETTLE", "UNSENT", "Sweep"]

#: The PostgreSQL advisory lock (``pg_try_advisory_xact_lock``) a pass holds.
DUTY_LOCK = 0x666B_7377  # "fksw"
#: A message published this long before a free worker's heartbeat would have
#: reached it and been claimed: delivery, the claim's round trip, clock skew.
SETTLE = timedelta(seconds=2)
#: The publish lease after the n-th re-publish: no other copy before it ends.
LEASES = tuple(timedelta(minutes=m) for m in (1, 2, 4, 8, 16, 32))
#: ``republishes`` of a queued step whose message was never sent (:mod:`.outbox`).
UNSENT = -1
_CAP = timedelta(hours=1)
_Q, _R = StepStatus.QUEUED.value, StepStatus.RUNNING.value


class Sweep:
    """The recovery sweep's reads and marks, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def run_pass(
        self,
        *,
        now: datetime,
        stale_after: float,
        local: Mapping[str, datetime] | None = None,
        worker_id: str | None = None,
        limit: int = 500,
    ) -> list[DueStep] | None:
        """One pass: the steps to publish again (already marked), or ``None`` when
        another process holds the duty now.

        Parameters:
            now: the pass's time.
            stale_after: a worker whose heartbeat is older is dead.
            local: evidence of this process's own worker: for each queue it
                consumes, a time before which that queue held no ready message.
            worker_id: this process's worker, never taken for dead.
            limit: the most rows each rule takes in one pass.
        """
        stale = now - timedelta(seconds=stale_after)
        with self.db.transaction() as conn:
            if not self._duty(conn):
                return None
            dead = self._requeue(conn, _dead_running(stale, worker_id, limit), now, dead=True)
            expired = self._requeue(conn, _expired_running(now, limit), now, dead=False)
            cuts = merge_cuts(_evidence(conn, stale), local or {})
            lost = self._lost(conn, cuts, now, limit)
            unsent = self._unsent(conn, now, limit)
        return [*dead, *expired, *lost, *unsent]

    def _duty(self, conn: Connection) -> bool:
        if not self.db.fast:
            return True
        got = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(DUTY_LOCK))).scalar()
        return bool(got)

    def _requeue(
        self, conn: Connection, select: Any, now: datetime, *, dead: bool
    ) -> list[DueStep]:
        """running → queued (lost attempt logged), marked re-published now."""
        rows = conn.execute(select).all()
        if not rows:
            return []
        by_id = {r.id: r for r in rows}
        guard = [steps.c.id.in_(list(by_id)), steps.c.status == _R]
        # A redelivery may have taken the step over meanwhile, with its own worker
        # and a new lease: the guard then matches no row.
        if dead:
            guard.append(steps.c.worker_id.in_(sorted({r.worker_id for r in rows})))
        else:
            guard.append(steps.c.lease_until < sa.literal(now, Timestamp))
        lost = conn.execute(
            steps.update()
            .where(*guard)
            .values(status=_Q, lease_until=None, republished_at=now, republishes=1)
            .returning(*ATTEMPT_COLUMNS)
        ).all()
        log_attempts(conn, lost, LOST, now)
        return [due_step(by_id[r.id], StepStatus.RUNNING.value) for r in lost]

    def _lost(
        self, conn: Connection, cuts: Mapping[str, datetime], now: datetime, limit: int
    ) -> list[DueStep]:
        """Queued steps (and expired signal waits) whose queue's evidence says gone."""
        out: list[DueStep] = []
        for queue, cut in sorted(cuts.items()):
            eligible = _eligible(queue, cut, now)
            rows = conn.execute(
                due_select()
                .where(runs.c.status.in_(RUN_LIVE), *eligible)
                .order_by(steps.c.scheduled_at)
                .limit(limit)
            ).all()
            if not rows:
                continue
            by_id = {r.id: r for r in rows}
            fresh = sa.or_(
                steps.c.republished_at.is_(None), steps.c.republished_at < steps.c.scheduled_at
            )
            marked = conn.execute(
                steps.update()
                .where(steps.c.id.in_(list(by_id)), *eligible)
                .values(
                    republished_at=now,
                    republishes=sa.case(
                        (fresh, 1), else_=sa.func.coalesce(steps.c.republishes, 0) + 1
                    ),
                )
                .returning(steps.c.id)
            ).all()
            out.extend(due_step(by_id[r.id], by_id[r.id].status) for r in marked)
        return out

    def _unsent(self, conn: Connection, now: datetime, limit: int) -> list[DueStep]:
        """Queued steps never published (:data:`UNSENT`), marked published once now."""
        never = [steps.c.status == _Q, steps.c.republishes == UNSENT]
        rows = conn.execute(
            due_select().where(runs.c.status.in_(RUN_LIVE), *never).limit(limit)
        ).all()
        if not rows:
            return []
        by_id = {r.id: r for r in rows}
        marked = conn.execute(
            steps.update()
            .where(steps.c.id.in_(list(by_id)), *never)
            .values(republished_at=now, republishes=1)
            .returning(steps.c.id)
        ).all()
        return [due_step(by_id[r.id], _Q) for r in marked]


def merge_cuts(*evidence: Mapping[str, datetime]) -> dict[str, datetime]:
    """The latest cut per queue among several workers' evidence."""
    cuts: dict[str, datetime] = {}
    for each in evidence:
        for queue, cut in each.items():
            if queue not in cuts or cut > cuts[queue]:
                cuts[queue] = cut
    return cuts


def _evidence(conn: Connection, stale: datetime) -> dict[str, datetime]:
    """Per queue, the latest heartbeat (less :data:`SETTLE`) of a live worker consuming
    it that had a thread free since at least :data:`SETTLE` before that heartbeat."""
    rows = conn.execute(
        sa.select(workers.c.queues, workers.c.heartbeat_at, workers.c.free_since).where(
            workers.c.heartbeat_at >= stale,
            workers.c.stopped_at.is_(None),
            workers.c.free_since.is_not(None),
        )
    ).all()
    cuts: dict[str, datetime] = {}
    for r in rows:
        beat, free = aware(r.heartbeat_at), aware(r.free_since)
        if beat is None or free is None or free > beat - SETTLE or not r.queues:
            continue
        cuts = merge_cuts(cuts, dict.fromkeys(r.queues, beat - SETTLE))
    return cuts


def _lease_cut(now: datetime) -> Any:
    """Before when the last re-publish must be, for the row's count of them."""
    whens = [
        (steps.c.republishes == n, sa.literal(now - lease, Timestamp))
        for n, lease in enumerate(LEASES, start=1)
    ]
    return sa.case(*whens, else_=sa.literal(now - _CAP, Timestamp))


def _eligible(queue: str, cut: datetime, now: datetime) -> list[sa.ColumnElement[bool]]:
    at = sa.literal(cut, Timestamp)
    return [
        steps.c.queue == queue,
        steps.c.status.in_(STEP_PENDING),
        steps.c.scheduled_at < at,
        sa.or_(
            steps.c.republished_at.is_(None),
            # re-published while queued before (a retry since re-queued it): a new lease
            steps.c.republished_at < steps.c.scheduled_at,
            sa.and_(steps.c.republished_at < at, steps.c.republished_at < _lease_cut(now)),
        ),
    ]


def _dead_running(stale: datetime, own: str | None, limit: int) -> Any:
    """Running steps whose worker stopped beating (or stopped, or is gone)."""
    dead = sa.or_(
        workers.c.id.is_(None), workers.c.stopped_at.is_not(None), workers.c.heartbeat_at < stale
    )
    held = [steps.c.status == _R, steps.c.worker_id.is_not(None), dead]
    if own is not None:
        held.append(steps.c.worker_id != own)
    return (
        due_select()
        .outerjoin(workers, workers.c.id == steps.c.worker_id)
        .where(runs.c.status.in_(RUN_LIVE), *held)
        .limit(limit)
    )


def _expired_running(now: datetime, limit: int) -> Any:
    return (
        due_select()
        .where(
            runs.c.status.in_(RUN_LIVE),
            steps.c.status == _R,
            steps.c.lease_until < sa.literal(now, Timestamp),
        )
        .limit(limit)
    )
