"""Durable control in the store: signals, timers' decisions, cancel, deadlines, redrive.

Each operation is one transaction with guarded UPDATEs, like the hot path:
a signal opens its waiting step at most once, a deadline fires at most once,
and a cancel wins over a completion that comes after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .._ids import new_id
from ..errors import RunNotFound, RunStateError, SignalRejected
from ..status import RunStatus, StepStatus
from .db import Database, aware, utcnow
from .gates import gate_input, move_gate, start_signal_wait
from .guards import RUN_LIVE, STEP_OPEN
from .rows import Gate, NewStep
from .schema import runs, signals, steps
from .transitions import (
    fail_wait,
    finish_run,
    insert_steps,
    open_step,
    requeue_items,
    restart_run,
    run_resumes,
    skip_pending,
)

__all__ = ["Control"]


class Control:
    """Signals, waits, cancel, deadlines and redrive over one :class:`Store`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- signals ---------------------------------------------------------------
    def deliver_signal(
        self, run_id: str, name: str, payload: Any, gate: Gate | None
    ) -> NewStep | None:
        """Record a signal; if its step is waiting only for it, queue the step.

        A signal that arrives before its step waits is kept and consumed when
        the step gets there. Returns the step to publish, if any.

        Raises:
            RunNotFound: no such run.
            SignalRejected: the run is over, this signal was already received, or
                its step stopped waiting (its wait timed out).
        """
        now = utcnow()
        with self.db.transaction() as conn:
            # The run row lock orders this against a completion that opens the wait.
            status = conn.execute(
                sa.select(runs.c.status).where(runs.c.id == run_id).with_for_update()
            ).scalar()
            if status is None:
                raise RunNotFound(f"no run {run_id!r}")
            if status not in RUN_LIVE:
                raise SignalRejected(
                    f"run {run_id} is {status}: signal {name!r} cannot change it any more"
                )
            try:
                with conn.begin_nested():
                    conn.execute(
                        signals.insert().values(
                            id=new_id(), run_id=run_id, name=name, payload=payload, created_at=now
                        )
                    )
            except IntegrityError:
                raise SignalRejected(
                    f"run {run_id} already received signal {name!r}; a signal is delivered once"
                ) from None
            if gate is not None and not _still_waits(conn, run_id, gate.name):
                raise SignalRejected(  # rolls the insert back
                    f"run {run_id}: step {gate.name!r} stopped waiting for signal {name!r} "
                    "when its timeout passed; a late signal is refused"
                )
            opened = move_gate(conn, run_id, gate, now) if gate is not None else None
            if opened is not None and opened.delay_ms is None:
                run_resumes(conn, run_id)
                return opened
        return None

    def time_out_wait(
        self, step_id: str, run_id: str, gate: Gate, *, run_without: bool, error: dict[str, Any]
    ) -> NewStep | bool | None:
        """A signal wait passed its deadline: run the step without it, or fail it.

        Run without it, the step's input is marked ``"timed_out"`` (the step gets
        :class:`~flowkit.TimedOut`). Returns the step to publish (``run_without``),
        ``True`` if the step and
        run failed, or ``None`` if the wait was already over.
        """
        now = utcnow()
        with self.db.transaction() as conn:
            if run_without:
                payload = gate_input(conn, run_id, gate, no_signal=True)
                res = open_step(conn, step_id, payload, now, only_signal_left=True)
                if res is None:
                    return None
                run_resumes(conn, run_id)
                return NewStep(id=step_id, name=gate.name, queue=res[0], input=payload)
            if not fail_wait(conn, step_id, error, now):
                return None
            skip_pending(conn, run_id, now)
            finish_run(conn, run_id, RunStatus.FAILED, now, error=error)
        return True

    # -- cancel and deadlines --------------------------------------------------
    def cancel(self, run_id: str) -> str | None:
        """End a run ``cancelled``: its queued and waiting steps are cancelled.

        Running steps finish their attempt (they can check ``ctx.cancelled``);
        their results are discarded. Returns the run's flow, or ``None`` if the
        run was already over.

        Raises:
            RunNotFound: no such run.
        """
        return self._end(run_id, RunStatus.CANCELLED, None)

    def time_out_run(self, run_id: str, error: dict[str, Any]) -> str | None:
        """End a run ``timed_out`` (its deadline passed): its flow, or ``None`` if already over."""
        return self._end(run_id, RunStatus.TIMED_OUT, error)

    def _end(self, run_id: str, status: RunStatus, error: dict[str, Any] | None) -> str | None:
        now = utcnow()
        with self.db.transaction() as conn:
            flow = conn.execute(sa.select(runs.c.flow).where(runs.c.id == run_id)).scalar()
            if flow is None:
                raise RunNotFound(f"no run {run_id!r}")
            if not finish_run(conn, run_id, status, now, error=error):
                return None
            skip_pending(conn, run_id, now, StepStatus.CANCELLED)
        return str(flow)

    def reset_deadline(self, run_id: str, ms: int | None) -> None:
        """Give a retried run a fresh deadline (``None``: none)."""
        now = utcnow()
        with self.db.transaction() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(deadline_at=None if ms is None else now + timedelta(milliseconds=ms))
            )

    def overdue_runs(self, limit: int = 1000) -> list[str]:
        """Live runs past their deadline."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(runs.c.id)
                .where(runs.c.status.in_(RUN_LIVE), runs.c.deadline_at <= utcnow())
                .limit(limit)
            ).all()
        return [r[0] for r in rows]

    def run_deadline(self, run_id: str) -> tuple[str, datetime | None] | None:
        """``(status, deadline_at)`` of a run."""
        with self.db.transaction() as conn:
            r = conn.execute(
                sa.select(runs.c.status, runs.c.deadline_at).where(runs.c.id == run_id)
            ).first()
        return None if r is None else (r[0], aware(r[1]))

    # -- redrive ---------------------------------------------------------------
    def redrive(
        self,
        run_id: str,
        *,
        reset: Sequence[str],
        restart: Sequence[tuple[NewStep, Gate | None]],
        waiting: Sequence[NewStep],
        keep_items: str | None = None,
        clear_signals: Sequence[str] = (),
        signal_waits: Sequence[Gate] = (),
        stranded: bool = False,
        obsolete: Sequence[str] = (),
        fingerprint: str | None = None,
    ) -> list[NewStep]:
        """Re-run part of a finished run, keeping the outputs of the steps before it.

        ``reset`` names the steps whose rows are replaced; ``restart`` are the
        steps to queue again (with a gate to gather their input from their
        parents' stored outputs, or ``None`` to keep the given input);
        ``waiting`` are joins re-created with their counters. With
        ``keep_items``, succeeded items of that fanned-out step are kept and
        only the others run again (the caller counts them into the joins'
        counters). Signals in ``clear_signals`` must be sent again. Returns
        the steps to publish.

        With ``stranded``, a live run marked stranded may be re-run too: its open
        steps named in ``obsolete`` (its flow no longer has them) are removed. The
        run takes ``fingerprint`` and loses its stranded mark either way.
        """
        now = utcnow()
        with self.db.transaction() as conn:
            _lock_finished(conn, run_id, stranded=stranded)
            _onto_deployed(conn, run_id, obsolete, fingerprint)
            out = _requeue_kept_items(conn, run_id, keep_items, now) if keep_items else []
            names = [n for n in reset if n != keep_items]
            if names:
                conn.execute(
                    steps.delete().where(steps.c.run_id == run_id, steps.c.name.in_(names))
                )
            fresh = [
                replace(step, input=step.input if gate is None else gate_input(conn, run_id, gate))
                for step, gate in restart
            ]
            insert_steps(conn, run_id, fresh, now)
            out += [replace(s, scheduled_at=None) for s in fresh]
            insert_steps(conn, run_id, waiting, now, status=StepStatus.WAITING)
            if clear_signals:
                conn.execute(
                    sa.delete(signals).where(
                        signals.c.run_id == run_id, signals.c.name.in_(list(clear_signals))
                    )
                )
            restart_run(conn, run_id)
            for g in signal_waits:  # waiting for a fresh signal: start its deadline
                (w,) = [w for w in waiting if w.name == g.name]
                timer = start_signal_wait(conn, run_id, w.id, g, now, w.queue)
                if timer is not None:
                    out.append(timer)
        return out


def _still_waits(conn: Connection, run_id: str, name: str) -> bool:
    """Whether the step ``name`` still waits: only its wait's timeout moves it on without
    its signal. Locked, so a timeout deciding at the same moment goes first or after."""
    status = conn.execute(
        sa.select(steps.c.status)
        .where(steps.c.run_id == run_id, steps.c.name == name)
        .with_for_update()
    ).scalar()
    return status is None or status == StepStatus.WAITING.value


def _onto_deployed(
    conn: Connection, run_id: str, obsolete: Sequence[str], fingerprint: str | None
) -> None:
    """A redrive moves the run onto the deployed definition: its open steps of names the
    flow no longer has go, its stranded mark too, and it takes the definition's fingerprint."""
    if obsolete:
        conn.execute(
            steps.delete().where(
                steps.c.run_id == run_id,
                steps.c.name.in_(list(obsolete)),
                steps.c.status.in_(STEP_OPEN),
            )
        )
    conn.execute(
        runs.update().where(runs.c.id == run_id).values(stranded=None, fingerprint=fingerprint)
    )


def _lock_finished(conn: Connection, run_id: str, *, stranded: bool = False) -> None:
    row = conn.execute(
        sa.select(runs.c.status, runs.c.stranded).where(runs.c.id == run_id).with_for_update()
    ).first()
    if row is None:
        raise RunNotFound(f"no run {run_id!r}")
    if row.status in RUN_LIVE and not (stranded and row.stranded is not None):
        raise RunStateError(
            f"run {run_id} is still {row.status}: only a finished run (or a stranded one) "
            "can be retried"
        )


def _requeue_kept_items(conn: Connection, run_id: str, name: str, now: datetime) -> list[NewStep]:
    requeue_items(conn, run_id, name, now)
    again = conn.execute(
        sa.select(steps.c.id, steps.c.queue)
        .where(
            steps.c.run_id == run_id,
            steps.c.name == name,
            steps.c.status == StepStatus.QUEUED.value,
        )
        .order_by(steps.c.item)
    ).all()
    return [NewStep(id=r[0], name=name, queue=r[1], input=None) for r in again]
