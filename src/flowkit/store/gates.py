"""SQL for joins and run endings, used inside the completion transaction.

A join is a ``waiting`` step row whose ``pending`` counter counts the
completions it still waits for. Every completion that feeds it moves the
counter in the same transaction that records the completion; the one that
brings it to zero gathers the join's input and queues it. The counter row is
locked by the UPDATE, so two workers can never both (or neither) open a join.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import RunStatus, StepStatus
from .guards import STEP_OPEN
from .rows import Gate, NewStep, RunEnd, Source
from .schema import runs, signals, steps
from .transitions import finish_run, move_counter, open_step, run_waits

__all__ = ["gate_input", "gather", "maybe_end", "move_gate", "start_signal_wait"]


def move_gate(conn: Connection, run_id: str, gate: Gate, now: datetime) -> NewStep | None:
    """Move a join's counter; if it reaches zero, queue it and return it.

    A step that also waits for a signal counts the signal as one more
    completion. When only the signal is missing, its deadline starts: the
    returned row then carries ``delay_ms`` and stays ``waiting`` (publish a
    wake-up message for it, which decides at the deadline).
    """
    row = move_counter(conn, run_id, gate.name, gate.delta)
    if row is None:
        return None
    if row.pending <= 0:
        payload = gate_input(conn, run_id, gate)
        open_step(conn, row.id, payload, now)
        return NewStep(id=row.id, name=gate.name, queue=row.queue, input=payload)
    if gate.signal and row.pending == 1 and not _has_signal(conn, run_id, gate.signal):
        return start_signal_wait(conn, run_id, row.id, gate, now, row.queue)
    return None


def start_signal_wait(
    conn: Connection, run_id: str, step_id: str, gate: Gate, now: datetime, queue: str
) -> NewStep | None:
    """Only the signal is missing: the run is waiting; start the step's deadline."""
    run_waits(conn, run_id)
    if gate.signal_timeout_ms is None:
        return None
    due = now + timedelta(milliseconds=gate.signal_timeout_ms)
    conn.execute(steps.update().where(steps.c.id == step_id).values(scheduled_at=due))
    return NewStep(
        id=step_id,
        name=gate.name,
        queue=queue,
        input=None,
        scheduled_at=due,
        delay_ms=gate.signal_timeout_ms,
    )


def _has_signal(conn: Connection, run_id: str, name: str) -> bool:
    return (
        conn.execute(
            sa.select(signals.c.id).where(signals.c.run_id == run_id, signals.c.name == name)
        ).first()
        is not None
    )


def gate_input(conn: Connection, run_id: str, gate: Gate, *, no_signal: bool = False) -> Any:
    """The input of a join (``{parent: output}`` for several parents) or a signal wait.

    A signal wait's is ``{"value", "signal"}``; ``no_signal`` (its timeout passed)
    marks it ``"timed_out": true``, which a ``null`` payload never is.
    """
    if gate.sources:
        values = {s.name: gather(conn, run_id, s) for s in gate.sources}
        payload = values if gate.multi else next(iter(values.values()))
    else:  # an entry step waiting for a signal: the run's own input
        payload = conn.execute(sa.select(runs.c.input).where(runs.c.id == run_id)).scalar()
    if gate.signal is None:
        return payload
    if no_signal:
        return {"value": payload, "signal": None, "timed_out": True}
    signal = conn.execute(
        sa.select(signals.c.payload).where(
            signals.c.run_id == run_id, signals.c.name == gate.signal
        )
    ).scalar()
    return {"value": payload, "signal": signal}


def gather(conn: Connection, run_id: str, source: Source) -> Any:
    """The output of a parent step, or the list (or Settled form) of its items' outputs."""
    if not source.each:
        return conn.execute(
            sa.select(steps.c.output).where(
                steps.c.run_id == run_id,
                steps.c.name == source.name,
                steps.c.status == StepStatus.SUCCEEDED.value,
            )
        ).scalar()
    rows = conn.execute(
        sa.select(steps.c.item, steps.c.status, steps.c.input, steps.c.output, steps.c.error)
        .where(steps.c.run_id == run_id, steps.c.name == source.name, steps.c.item.is_not(None))
        .order_by(steps.c.item)
    ).all()
    results = [r.output for r in rows if r.status == StepStatus.SUCCEEDED.value]
    if not source.settles:
        return results
    failures = [
        {
            "item": r.item,
            "input": r.input,
            "error_type": (r.error or {}).get("type", "Error"),
            "message": (r.error or {}).get("message", ""),
        }
        for r in rows
        if r.status == StepStatus.FAILED.value
    ]
    return {"results": results, "failures": failures}


def maybe_end(conn: Connection, run_id: str, end: RunEnd, now: datetime) -> bool:
    """Finish the run if no step is left; the run row lock orders concurrent enders."""
    conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id).with_for_update())
    left = conn.execute(
        sa.select(sa.func.count())
        .select_from(steps)
        .where(steps.c.run_id == run_id, steps.c.status.in_(STEP_OPEN))
    ).scalar_one()
    if left:
        return False
    outputs = {s.name: gather(conn, run_id, s) for s in end.sinks}
    output = next(iter(outputs.values())) if len(outputs) == 1 else outputs
    return finish_run(conn, run_id, RunStatus.SUCCEEDED, now, output=output)
