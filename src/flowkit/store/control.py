"""Durable control in the store: signals, timers' decisions, cancel, deadlines, redrive.

Each operation is one transaction with guarded UPDATEs, like the hot path:
a signal opens its waiting step at most once, a deadline fires at most once,
and a cancel wins over a completion that comes after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .._ids import new_id
from ..errors import RunNotFound, RunStateError, SignalRejected
from ..status import RunStatus, StepStatus
from .gates import LIVE_RUN as _LIVE_RUN
from .gates import finish_run, gate_input, move_gate, skip_live, start_signal_wait
from .rows import Gate, NewStep
from .schema import runs, signals, steps

if TYPE_CHECKING:
    from .repo import Store

__all__ = ["Control", "StepRow"]


@dataclass(frozen=True)
class StepRow:
    """What the runtime needs to decide about a message that could not claim its step."""

    status: str
    claimed_by: str | None
    run_id: str
    name: str
    scheduled_at: datetime | None
    pending: int | None


class Control:
    """Signals, waits, cancel, deadlines and redrive over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def step_row(self, step_id: str) -> StepRow | None:
        with self.store._tx() as conn:
            r = conn.execute(
                sa.select(
                    steps.c.status,
                    steps.c.claimed_by,
                    steps.c.run_id,
                    steps.c.name,
                    steps.c.scheduled_at,
                    steps.c.pending,
                ).where(steps.c.id == step_id)
            ).first()
        if r is None:
            return None
        return StepRow(r[0], r[1], r[2], r[3], _aware(r[4]), r[5])

    # -- signals ---------------------------------------------------------------
    def deliver_signal(
        self, run_id: str, name: str, payload: Any, gate: Gate | None
    ) -> NewStep | None:
        """Record a signal; if its step is waiting only for it, queue the step.

        A signal that arrives before its step waits is kept and consumed when
        the step gets there. Returns the step to publish, if any.

        Raises:
            RunNotFound: no such run.
            SignalRejected: the run is over, or this signal was already received.
        """
        now = _now()
        with self.store._tx() as conn:
            # The run row lock orders this against a completion that opens the wait.
            status = conn.execute(
                sa.select(runs.c.status).where(runs.c.id == run_id).with_for_update()
            ).scalar()
            if status is None:
                raise RunNotFound(f"no run {run_id!r}")
            if status not in _LIVE_RUN:
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
            opened = move_gate(conn, run_id, gate, now) if gate is not None else None
            if opened is not None and opened.delay_ms is None:
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id, runs.c.status == RunStatus.WAITING.value)
                    .values(status=RunStatus.RUNNING.value)
                )
                return opened
        return None

    def time_out_wait(
        self, step_id: str, run_id: str, gate: Gate, *, run_without: bool, error: dict[str, Any]
    ) -> NewStep | bool | None:
        """A signal wait passed its deadline: run the step without it, or fail it.

        Returns the step to publish (``run_without``), ``True`` if the step and
        run failed, or ``None`` if the wait was already over.
        """
        now = _now()
        with self.store._tx() as conn:
            if run_without:
                payload = gate_input(conn, run_id, gate, no_signal=True)
                res = conn.execute(
                    steps.update()
                    .where(
                        steps.c.id == step_id,
                        steps.c.status == StepStatus.WAITING.value,
                        steps.c.pending == 1,
                    )
                    .values(
                        status=StepStatus.QUEUED.value, input=payload, scheduled_at=now, pending=0
                    )
                    .returning(steps.c.queue)
                ).first()
                if res is None:
                    return None
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id, runs.c.status == RunStatus.WAITING.value)
                    .values(status=RunStatus.RUNNING.value)
                )
                return NewStep(id=step_id, name=gate.name, queue=res[0], input=payload)
            done = conn.execute(
                steps.update()
                .where(steps.c.id == step_id, steps.c.status == StepStatus.WAITING.value)
                .values(status=StepStatus.FAILED.value, error=error, finished_at=now)
            )
            if done.rowcount != 1:
                return None
            skip_live(conn, run_id, now)
            finish_run(conn, run_id, RunStatus.FAILED, now, error=error)
        return True

    # -- cancel and deadlines --------------------------------------------------
    def cancel(self, run_id: str) -> bool:
        """End a run ``cancelled``: its queued and waiting steps are cancelled.

        Running steps finish their attempt (they can check ``ctx.cancelled``);
        their results are discarded. Returns ``False`` if the run was already over.

        Raises:
            RunNotFound: no such run.
        """
        return self._end(run_id, RunStatus.CANCELLED, None)

    def time_out_run(self, run_id: str, error: dict[str, Any]) -> bool:
        """End a run ``timed_out`` (its deadline passed); ``False`` if already over."""
        return self._end(run_id, RunStatus.TIMED_OUT, error)

    def _end(self, run_id: str, status: RunStatus, error: dict[str, Any] | None) -> bool:
        now = _now()
        with self.store._tx() as conn:
            exists = conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).scalar()
            if exists is None:
                raise RunNotFound(f"no run {run_id!r}")
            if not finish_run(conn, run_id, status, now, error=error):
                return False
            skip_live(conn, run_id, now, StepStatus.CANCELLED)
        return True

    def reset_deadline(self, run_id: str, ms: int | None) -> None:
        """Give a retried run a fresh deadline (``None``: none)."""
        now = _now()
        with self.store._tx() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(deadline_at=None if ms is None else now + timedelta(milliseconds=ms))
            )

    def overdue_runs(self, limit: int = 1000) -> list[str]:
        """Live runs past their deadline."""
        with self.store._tx() as conn:
            rows = conn.execute(
                sa.select(runs.c.id)
                .where(runs.c.status.in_(_LIVE_RUN), runs.c.deadline_at <= _now())
                .limit(limit)
            ).all()
        return [r[0] for r in rows]

    def run_deadline(self, run_id: str) -> tuple[str, datetime | None] | None:
        """``(status, deadline_at)`` of a run."""
        with self.store._tx() as conn:
            r = conn.execute(
                sa.select(runs.c.status, runs.c.deadline_at).where(runs.c.id == run_id)
            ).first()
        return None if r is None else (r[0], _aware(r[1]))

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
        """
        now = _now()
        out: list[NewStep] = []
        with self.store._tx() as conn:
            run = conn.execute(
                sa.select(runs.c.status).where(runs.c.id == run_id).with_for_update()
            ).scalar()
            if run is None:
                raise RunNotFound(f"no run {run_id!r}")
            if run in _LIVE_RUN:
                raise RunStateError(
                    f"run {run_id} is still {run}: only a finished run can be retried"
                )
            if keep_items:
                conn.execute(
                    steps.update()
                    .where(
                        steps.c.run_id == run_id,
                        steps.c.name == keep_items,
                        steps.c.status != StepStatus.SUCCEEDED.value,
                    )
                    .values(
                        status=StepStatus.QUEUED.value,
                        attempts=0,
                        error=None,
                        claimed_by=None,
                        scheduled_at=now,
                        started_at=None,
                        finished_at=None,
                        lease_until=None,
                    )
                )
                again = conn.execute(
                    sa.select(steps.c.id, steps.c.queue)
                    .where(
                        steps.c.run_id == run_id,
                        steps.c.name == keep_items,
                        steps.c.status == StepStatus.QUEUED.value,
                    )
                    .order_by(steps.c.item)
                ).all()
                out += [NewStep(id=r[0], name=keep_items, queue=r[1], input=None) for r in again]
            names = [n for n in reset if n != keep_items]
            if names:
                conn.execute(
                    steps.delete().where(steps.c.run_id == run_id, steps.c.name.in_(names))
                )
            for step, gate in restart:
                payload = step.input if gate is None else gate_input(conn, run_id, gate)
                conn.execute(
                    steps.insert().values(
                        id=step.id,
                        run_id=run_id,
                        name=step.name,
                        item=step.item,
                        status=StepStatus.QUEUED.value,
                        queue=step.queue,
                        attempts=0,
                        input=payload,
                        created_at=now,
                        scheduled_at=now,
                    )
                )
                out.append(NewStep(id=step.id, name=step.name, queue=step.queue, input=payload))
            for w in waiting:
                conn.execute(
                    steps.insert().values(
                        id=w.id,
                        run_id=run_id,
                        name=w.name,
                        status=StepStatus.WAITING.value,
                        queue=w.queue,
                        attempts=0,
                        created_at=now,
                        pending=w.pending,
                    )
                )
            if clear_signals:
                conn.execute(
                    sa.delete(signals).where(
                        signals.c.run_id == run_id, signals.c.name.in_(list(clear_signals))
                    )
                )
            status = RunStatus.RUNNING
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status=status.value,
                    error=None,
                    output=None,
                    stop_reason=None,
                    finished_at=None,
                )
            )
            for g in signal_waits:  # waiting for a fresh signal: start its deadline
                (w,) = [w for w in waiting if w.name == g.name]
                timer = start_signal_wait(conn, run_id, w.id, g, now, w.queue)
                if timer is not None:
                    out.append(timer)
        return out


def _now() -> datetime:
    from .repo import utcnow

    return utcnow()


def _aware(value: datetime | None) -> datetime | None:
    from .repo import _aware as aware

    return aware(value)
