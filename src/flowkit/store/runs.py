"""The runtime's writes: submit a run, claim a step, record its outcome, recover.

Each is one short transaction (on PostgreSQL the per-step claim and the common
completions are one statement each) made of the guarded statements of
:mod:`.transitions`, so a duplicate message or a concurrent worker can never
record a step twice: the second guard matches no row and nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..status import RunStatus, StepStatus
from . import transitions as t
from .attempts import FAILED, LOST, RETRIED, log_attempts, running_attempt
from .db import Database, utcnow
from .gates import maybe_end, move_gate, start_signal_wait
from .handoff import hand_over, lock_slots, refuse, wake
from .inserts import CREATE_RUN, create_params
from .limits import check as check_limits
from .overdue import due_query, due_step
from .rows import NO_STOP, Claim, ClaimLimits, Delayed, DueStep, Gate, Handoff, NewStep, Outcome
from .schema import runs, steps

__all__ = ["Created", "Recorded", "Runs"]

# A message may arrive this early for its step's due time (clock skew, jitter).
_EARLY = timedelta(milliseconds=500)


@dataclass
class Created:
    """What :meth:`Runs.create` did: ``created`` is False when the key was known."""

    run_id: str
    created: bool
    steps: list[NewStep] = field(default_factory=list)
    timers: list[NewStep] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    """A recorded outcome: the steps to publish, whether it ended the run, and the
    successor it claimed for this thread to run next (``Outcome.chain``)."""

    ready: list[NewStep]
    ended: bool = False
    chained: Claim | None = None


class Runs:
    """Runs and steps as the runtime changes them, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- submit ----------------------------------------------------------------
    def create(
        self,
        *,
        run_id: str,
        flow: str,
        key: str | None,
        input: Any,
        first: Sequence[NewStep],
        waiting: Sequence[NewStep] = (),
        deadline_ms: int | None = None,
        entry_waits: Sequence[Gate] = (),
        priority: int | None = None,
        trace_context: dict[str, str] | None = None,
        fingerprint: str | None = None,
    ) -> Created:
        """Insert a run and its first steps; with a known key, return the existing run.

        ``entry_waits`` are entry steps that wait for a signal: their deadlines
        start now, and the returned ``timers`` need wake-up messages.
        ``trace_context`` is the submit's trace context, kept for later publishers;
        ``fingerprint`` the flow definition's (:mod:`flowkit.fingerprints`).
        """
        now = utcnow()
        deadline = None if deadline_ms is None else now + timedelta(milliseconds=deadline_ms)
        if self.db.fast and len(first) == 1 and not waiting:
            params = create_params(
                run_id, flow, key, input, now, priority, deadline, trace_context, first[0]
            )
            params["fingerprint"] = fingerprint
            made = self._create_one(params, flow, key, list(first))
            if made is not None:
                return made
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    runs.insert().values(
                        id=run_id,
                        flow=flow,
                        key=key,
                        status=RunStatus.PENDING.value,
                        input=input,
                        created_at=now,
                        priority=priority,
                        deadline_at=deadline,
                        trace_context=trace_context,
                        fingerprint=fingerprint,
                    )
                )
                t.insert_steps(conn, run_id, first, now)
                t.insert_steps(conn, run_id, waiting, now, status=StepStatus.WAITING)
                timers = _entry_timers(conn, run_id, waiting, entry_waits, now)
            return Created(run_id, True, list(first), timers)
        except IntegrityError:
            existing = None if key is None else self.find_by_key(flow, key)
            if existing is None:  # no key, or the conflicting run was deleted
                raise
            return Created(existing, False)

    def _create_one(
        self, params: dict[str, Any], flow: str, key: str | None, first: list[NewStep]
    ) -> Created | None:
        """PostgreSQL: the run and its one entry step in one statement (``None``: the
        general path decides, e.g. an id taken without a key)."""
        if self.db.first(CREATE_RUN, params, durable=True) is not None:
            return Created(params["rid"], True, first)
        existing = None if key is None else self.find_by_key(flow, key)
        return None if existing is None else Created(existing, False)

    def find_by_key(self, flow: str, key: str) -> str | None:
        with self.db.transaction() as conn:
            return conn.execute(
                sa.select(runs.c.id).where(runs.c.flow == flow, runs.c.key == key)
            ).scalar_one_or_none()

    # -- the worker's hot path -------------------------------------------------
    def claim(
        self,
        step_id: str,
        message_id: str,
        *,
        lease_ms: int,
        starts_run: bool,
        limits: ClaimLimits | None = None,
        redelivered: bool = True,
        worker_id: str | None = None,
    ) -> Claim | Delayed | None:
        """Mark a step running for this message; ``None`` if it is not ours to run.

        A ``queued`` step is claimed by whichever message comes first; a
        ``running`` step only by a redelivery of the message that claimed it
        (its worker died: the broker marks it ``redelivered``). Anything else is a
        duplicate, including a second copy of the same message published twice.
        A step over one of its ``limits`` is not claimed: :class:`Delayed` says
        when to try again (over a concurrency limit it waits for its slot to be
        handed over, :mod:`.handoff`). ``worker_id`` (a :class:`~.workers.Workers` row) is
        recorded on the step as the worker holding it.
        """
        # A redelivery may take over a running step, whose lost attempt is logged:
        # that rare case takes the general path, never the one-statement claim.
        if limits is None and self.db.fast and not redelivered:
            row = self.db.first(
                self.db.unflushed(t.CLAIM_AND_START if starts_run else t.CLAIM),
                _claim_params(
                    step_id, message_id, lease_ms, redelivered, utcnow(), None, worker_id
                ),
                durable=False,
            )
            return None if row is None else _claim(row)
        with self.db.transaction() as conn:
            # Read the clock once the transaction holds its locks, so start times
            # (and the rate limits' log) are in the order the claims commit.
            now = utcnow()
            if limits is not None:
                delayed, now = check_limits(conn, step_id, limits)
                if delayed is not None:
                    mid = message_id if redelivered else None
                    return refuse(conn, step_id, delayed, now, early=now + _EARLY, takeover=mid)
            key = limits.key if limits is not None else None
            lost = running_attempt(conn, step_id) if redelivered else None
            params = _claim_params(step_id, message_id, lease_ms, redelivered, now, key, worker_id)
            row = conn.execute(t.CLAIM, params).first()
            if row is None and limits is not None and wake(conn, step_id, now):
                row = conn.execute(t.CLAIM, params).first()  # it waited for a slot now free
            if row is None:
                return None
            if lost is not None:
                log_attempts(conn, [lost], LOST, now)
            if starts_run:
                t.start_run(conn, row.run_id, now)
        return _claim(row)

    def step_input(self, step_id: str) -> Any:
        """A step's stored input (to compute its limit keys before claiming it)."""
        with self.db.transaction() as conn:
            return conn.execute(sa.select(steps.c.input).where(steps.c.id == step_id)).scalar()

    def complete(
        self,
        step_id: str,
        message_id: str,
        run_id: str,
        outcome: Outcome,
        handoff: Handoff | None = None,
    ) -> Recorded | None:
        """Record a step's outcome and queue what follows, atomically.

        Returns the steps to publish and whether the run ended, or ``None``
        (and changes nothing) if the step was already finished or its run is over.
        With ``outcome.chain``, its only successor is inserted ``running``, claimed by
        ``message_id`` (``Recorded.chained``), and nothing is to publish; on PostgreSQL
        that statement does not wait for the WAL flush (losing it in a database crash
        only runs the step again; every later commit of the chain flushes it).
        With a ``handoff`` (the step holds concurrency slots), the same transaction
        hands them over, recorded or cancelled late (:class:`~.rows.Handoff`).
        """
        now = utcnow()
        params = _record_params(step_id, message_id, now, outcome)
        if handoff is None and self.db.fast and (outcome.only_sink or outcome.only_successor):
            return self._complete_fast(run_id, now, params, outcome)
        done: Recorded | None = None
        with self.db.transaction() as conn:
            keys = lock_slots(conn, step_id, handoff)
            if not t.record(conn, params):
                if not t.cancel_if_run_over(conn, step_id, now):
                    return None  # finished already: the slot was not this attempt's
            elif (chained := _chain(conn, run_id, now, outcome, message_id)) is not None:
                done = Recorded([], chained=chained)
            else:
                done = _follow(conn, run_id, now, outcome)
            handed = hand_over(conn, keys, now)
            if not (handed or (done is not None and (done.ready or done.ended))):
                # Nothing is published and no run ended (e.g. a fan-out item): read at commit.
                self.db.wait_for_wal(conn, False)
        _handed(handoff, handed)
        return done

    def _complete_fast(
        self, run_id: str, now: datetime, params: dict[str, Any], outcome: Outcome
    ) -> Recorded | None:
        """PostgreSQL: the most common completions as one statement each."""
        chain = outcome.chain if outcome.only_successor else None
        if outcome.only_successor:
            nxt = outcome.inserts[0]
            params.update(
                nid=nxt.id,
                rid=run_id,
                nname=nxt.name,
                nitem=nxt.item,
                nqueue=nxt.queue,
                ninput=nxt.input,
                nsched=nxt.scheduled_at or now,
            )
            if chain is not None:
                params.update(lease=chain.lease_until, wid=chain.worker_id)
            statement = (
                t.COMPLETE_WITH_SUCCESSOR
                if chain is None
                else self.db.unflushed(t.COMPLETE_AND_CLAIM)
            )
            recorded = self.db.first(statement, params, durable=chain is None) is not None
            ended = False
        else:
            row = self.db.first(t.COMPLETE_AND_END, params, durable=True)
            recorded, ended = (bool(n) for n in row)
        if not recorded:
            with self.db.transaction() as conn:
                t.cancel_if_run_over(conn, params["sid"], now)
            return None
        if chain is not None:
            nxt = outcome.inserts[0]
            return Recorded([], chained=Claim(run_id, nxt.name, 1, nxt.input, nxt.item))
        if not ended and outcome.end is not None:
            # Another step of the run is unexpectedly open: decide under its lock.
            with self.db.transaction() as conn:
                ended = maybe_end(conn, run_id, outcome.end, now)
        return Recorded([*outcome.inserts], ended)

    def schedule_retry(
        self,
        step_id: str,
        error: dict[str, Any],
        due: datetime,
        usage: Any = None,
        handoff: Handoff | None = None,
    ) -> bool:
        """Put a failed attempt back to ``queued`` with its error, due at ``due``.

        The attempt is logged (``retried``) in the same transaction, which hands
        over the step's concurrency slots with a ``handoff``.
        """
        now = utcnow()
        with self.db.transaction() as conn:
            keys = lock_slots(conn, step_id, handoff)
            row = t.schedule_retry(conn, step_id, error, due, usage)
            if row is None:
                return False
            log_attempts(conn, [row], RETRIED, now, error)
            handed = hand_over(conn, keys, now)
        _handed(handoff, handed)
        return True

    def fail(
        self,
        step_id: str,
        run_id: str,
        error: dict[str, Any],
        usage: Any = None,
        handoff: Handoff | None = None,
    ) -> bool:
        """Mark a step and its run ``failed`` with the error, atomically (attempt logged;
        the step's concurrency slots handed over with a ``handoff``)."""
        now = utcnow()
        with self.db.transaction() as conn:
            keys = lock_slots(conn, step_id, handoff)
            row = t.fail_step(conn, step_id, error, now, usage)
            if row is None:
                return False
            log_attempts(conn, [row], FAILED, now, error)
            t.skip_pending(conn, run_id, now)
            t.finish_run(conn, run_id, RunStatus.FAILED, now, error=error)
            handed = hand_over(conn, keys, now)
        _handed(handoff, handed)
        return True

    def release_chain(self, run_id: str, message_id: str) -> list[str]:
        """A step message came back after its step was completed: its worker may have
        died in a chain. Queue again the chained steps it left ``running`` (their
        attempts logged ``lost``); return the names of the steps that message completed,
        whose successors still queued the caller publishes again.
        """
        now = utcnow()
        done = (StepStatus.SUCCEEDED.value, StepStatus.FAILED.value)
        with self.db.transaction() as conn:
            lost = t.release_chain(conn, run_id, message_id)
            if lost:
                log_attempts(conn, lost, LOST, now)
            names = conn.execute(
                sa.select(steps.c.name).where(
                    steps.c.run_id == run_id,
                    steps.c.claimed_by == message_id,
                    steps.c.status.in_(done),
                )
            ).scalars()
            return sorted(set(names))

    def queued_steps(self, run_id: str, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(id, name, queue)`` of the run's still-queued steps among ``names``."""
        if not names:
            return []
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(steps.c.id, steps.c.name, steps.c.queue).where(
                    steps.c.run_id == run_id,
                    steps.c.name.in_(list(names)),
                    steps.c.status == StepStatus.QUEUED.value,
                )
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- recovery --------------------------------------------------------------
    def due_steps(
        self, *, older_than: float, limit: int = 1000, all_running: bool = False
    ) -> list[DueStep]:
        """Queued steps due for ``older_than`` seconds, and running steps past their lease.

        Running steps past their lease go back to ``queued`` so a new message
        may claim them. ``all_running`` treats every running step as abandoned:
        right for an embedded (in-process) broker starting up, when no other
        process can be running them.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        lease_cutoff = datetime.max.replace(tzinfo=timezone.utc) if all_running else now
        with self.db.transaction() as conn:
            rows = conn.execute(due_query(cutoff, lease_cutoff, limit)).all()
            expired = [r.id for r in rows if r.status == StepStatus.RUNNING.value]
            if expired:
                log_attempts(conn, t.requeue_expired(conn, expired, lease_cutoff), LOST, now)
        waiting, queued = StepStatus.WAITING.value, StepStatus.QUEUED.value
        return [due_step(r, waiting if r.status == waiting else queued) for r in rows]


def _entry_timers(
    conn: Connection,
    run_id: str,
    waiting: Sequence[NewStep],
    entry_waits: Sequence[Gate],
    now: datetime,
) -> list[NewStep]:
    """Start the deadlines of a new run's entry signal waits; the timers they need."""
    timers = []
    for gate in entry_waits:
        (step,) = [w for w in waiting if w.name == gate.name]
        timer = start_signal_wait(conn, run_id, step.id, gate, now, step.queue)
        if timer is not None:
            timers.append(timer)
    return timers


def _claim_params(
    step_id: str,
    message_id: str,
    lease_ms: int,
    redelivered: bool,
    now: datetime,
    limit_key: str | None,
    worker_id: str | None,
) -> dict[str, Any]:
    return {
        "sid": step_id,
        "mid": message_id,
        "now": now,
        "early": now + _EARLY,
        "redelivered": redelivered,
        "lease": now + timedelta(milliseconds=lease_ms),
        "lkey": limit_key,
        "wid": worker_id,
    }


def _claim(row: Any) -> Claim:
    return Claim(row.run_id, row.name, row.attempts, row.input, row.item, row.usage)


def _handed(handoff: Handoff | None, handed: list[DueStep]) -> None:
    """After the commit: the steps handed a slot, for the caller to publish."""
    if handoff is not None:
        handoff.handed.extend(handed)


def _record_params(
    step_id: str, message_id: str, now: datetime, outcome: Outcome
) -> dict[str, Any]:
    status = StepStatus.FAILED if outcome.failed else StepStatus.SUCCEEDED
    return {
        "sid": step_id,
        "mid": message_id,
        "now": now,
        "status": status.value,
        "output": outcome.output,
        "error": outcome.failed,
        "usage": outcome.usage,
        "trace": outcome.trace,
    }


def _chain(
    conn: Connection, run_id: str, now: datetime, outcome: Outcome, message_id: str
) -> Claim | None:
    """The only successor inserted ``running`` for this thread, if the outcome chains."""
    if outcome.chain is None or not outcome.only_successor:
        return None
    nxt = outcome.inserts[0]
    claim = (message_id, outcome.chain.lease_until, outcome.chain.worker_id)
    t.insert_claimed(conn, run_id, nxt, now, claim)
    return Claim(run_id, nxt.name, 1, nxt.input, nxt.item)


def _follow(conn: Connection, run_id: str, now: datetime, outcome: Outcome) -> Recorded:
    """What a recorded outcome starts: successors, joins, the run's end."""
    t.insert_steps(conn, run_id, outcome.inserts, now)
    ready = [*outcome.inserts]
    for gate in outcome.gates:
        opened = move_gate(conn, run_id, gate, now)
        if opened is not None:
            ready.append(opened)
    if outcome.skipped:
        t.insert_skipped(conn, run_id, outcome.skipped, now)
    if outcome.stop is not NO_STOP:
        t.skip_pending(conn, run_id, now)
        reason = (outcome.stop_reason or "stopped")[:500]
        ended = t.finish_run(
            conn, run_id, RunStatus.SUCCEEDED, now, output=outcome.stop, stop_reason=reason
        )
        return Recorded(ready, ended)
    if outcome.end is not None and not ready:
        return Recorded(ready, maybe_end(conn, run_id, outcome.end, now))
    return Recorded(ready)
