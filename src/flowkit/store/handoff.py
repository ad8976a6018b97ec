"""The concurrency hand-off: a step over a concurrency limit waits as a row for its slot.

A claim refused by a concurrency limit (:func:`refuse`, from :mod:`.limits`) leaves
its step ``queued``, marked as waiting for that limit's key (``waits_for``:
``conc:<limit key>`` or ``queue:<queue>``) and due again :data:`FALLBACK_MS` (jittered)
later, when the one timer message its caller sends comes back. It is not re-sent
meanwhile: a copy of its message that arrives before that time is dropped while the
slot is taken, and claims the slot if it is free (:func:`wake`).

The transaction that stops a running step holding such a slot (succeeded, failed,
retried, or cancelled because its run ended) first takes the key's lock, the lock a
claim checks the limit under (:func:`lock_slots`); then :func:`hand_over` takes the oldest step
waiting for the key (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), clears its mark and
makes it due now; once that commits, the caller publishes its message
(:class:`~.rows.Handoff`). The lock orders the two: a refused claim's mark is
committed before the hand-off looks for waiters, or the claim counts the slot free.

A hand-off only says who should try now. The waiter's claim is checked against the
limit like any other, so a hand-off can never over-admit: a waiter that finds the slot
taken (a fresh message came first) waits again. A hand-off that is lost (its
message, its waiter's run ended, its process killed after the commit) costs at most
the fallback: the waiter's timer claims, or waits again. If that timer is lost too,
the row is left due in the past, which the recovery sweep re-publishes on its usual
evidence (:mod:`.sweep`). Rate limits are not handed over: a step over one is put
off until its window allows (:func:`refuse`, as before).
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import StepStatus
from .db import aware
from .guards import RUN_LIVE
from .limits import lock_keys
from .overdue import due_select, due_step
from .rows import Delayed, DueStep, Handoff
from .schema import runs, steps

__all__ = ["FALLBACK_MS", "hand_over", "lock_slots", "refuse", "wake"]

#: How long a step waiting for a concurrency slot waits at most before its own timer
#: claims again, should its hand-off be lost (jittered by a fifth either way).
FALLBACK_MS = 10_000

_Q, _R = StepStatus.QUEUED.value, StepStatus.RUNNING.value


def refuse(
    conn: Connection,
    step_id: str,
    delayed: Delayed,
    now: datetime,
    *,
    early: datetime,
    takeover: str | None,
) -> Delayed | None:
    """A claim over a limit: what its message does, or ``None`` if it is not ours to claim.

    Over a rate limit the step is put off: due when the window allows, its message
    sent again then. Over a concurrency limit a queued step that is due waits for
    the slot (marked, due after the fallback; its message is the fallback timer);
    one that waits already, due later than ``early``, has that timer armed, so this
    copy sends nothing. ``takeover`` is the message id of a redelivery, which may
    take over the step it runs: over the limit it comes back in a moment, as before.
    """
    if delayed.slot is None:
        _put_off(conn, step_id, now + timedelta(milliseconds=delayed.ms))
        return delayed
    row = conn.execute(
        sa.select(
            steps.c.status, steps.c.claimed_by, steps.c.scheduled_at, steps.c.waits_for
        ).where(steps.c.id == step_id)
    ).first()
    if row is None:
        return None
    if row.status == _R and takeover is not None and row.claimed_by == takeover:
        return delayed
    if row.status != _Q:
        return None  # finished, or another message's: the caller tells which
    due = aware(row.scheduled_at)
    if due is not None and due > early:
        # Not due yet: a step waiting for its slot (its timer is armed), or a
        # timer that came early (the caller sends it again for the rest).
        return replace(delayed, send=False) if row.waits_for is not None else None
    ms = FALLBACK_MS * 4 // 5 + random.randint(0, FALLBACK_MS * 2 // 5)
    fallback = now + timedelta(milliseconds=ms)
    conn.execute(
        steps.update()
        .where(steps.c.id == step_id, steps.c.status == _Q)
        .values(waits_for=delayed.slot, scheduled_at=fallback)
    )
    return replace(delayed, ms=ms, due=fallback)


def wake(conn: Connection, step_id: str, now: datetime) -> bool:
    """A message for a step waiting for a slot found the limit with room: due now.

    Any of a waiting step's messages (its timer, a copy) may then take the slot,
    rather than be sent again for the fallback's time while the slot stays free.
    """
    woken = conn.execute(
        steps.update()
        .where(steps.c.id == step_id, steps.c.status == _Q, steps.c.waits_for.is_not(None))
        .values(waits_for=None, scheduled_at=now)
    )
    return bool(woken.rowcount == 1)


def lock_slots(conn: Connection, step_id: str, handoff: Handoff | None) -> list[str]:
    """Lock the keys of the concurrency slots ``step_id`` holds (none without a
    ``handoff``), first in the transaction that stops it: a claim locks its keys
    before the rows it changes, and so must this (a run's failure also cancels its
    queued steps, a waiter among them). Returns the keys, for :func:`hand_over`.
    """
    if handoff is None:
        return []
    limit_key = conn.execute(sa.select(steps.c.limit_key).where(steps.c.id == step_id)).scalar()
    keys = {f"conc:{limit_key}"} if limit_key else set()
    if handoff.queue is not None:
        keys.add(f"queue:{handoff.queue}")
    lock_keys(conn, keys)
    return sorted(keys)


def hand_over(conn: Connection, keys: list[str], now: datetime) -> list[DueStep]:
    """A step stopped running: hand each slot of ``keys`` (locked by :func:`lock_slots`)
    to the oldest step waiting for it, made due now. Returns those steps, for the
    caller to publish once the transaction has committed.
    """
    handed = (_oldest(conn, key, now) for key in keys)
    return [step for step in handed if step is not None]


def _oldest(conn: Connection, key: str, now: datetime) -> DueStep | None:
    """The oldest live step waiting for a slot of ``key``, locked, now due and unmarked."""
    row = conn.execute(
        due_select()
        .where(
            steps.c.waits_for == key,
            steps.c.status == _Q,
            runs.c.status.in_(RUN_LIVE),
            sa.or_(runs.c.deadline_at.is_(None), runs.c.deadline_at > now),
        )
        .order_by(steps.c.created_at, steps.c.id)
        .limit(1)
        .with_for_update(of=steps, skip_locked=True)
    ).first()
    if row is None:
        return None
    conn.execute(
        steps.update().where(steps.c.id == row.id).values(waits_for=None, scheduled_at=now)
    )
    return due_step(row, _Q)


def _put_off(conn: Connection, step_id: str, due: datetime) -> None:
    # The row says when it is due, so the recovery sweep does not mistake a
    # step waiting for its rate limit's window for a lost one.
    conn.execute(
        steps.update().where(steps.c.id == step_id, steps.c.status == _Q).values(scheduled_at=due)
    )
