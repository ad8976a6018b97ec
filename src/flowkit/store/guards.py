"""The guards of flowkit's state machine, each defined once (see :mod:`.transitions`).

=============  ==================================  ==========================================
name           statuses                            meaning
=============  ==================================  ==========================================
STEP_LIVE      queued, running                     may still record an outcome
STEP_OPEN      queued, running, waiting            the run is not done while one is left
STEP_PENDING   queued, waiting                     not started: skipped when the run ends
RUN_LIVE       pending, running, waiting           the run may still change
run_is_live    RUN_LIVE and deadline not passed    the step's run accepts this change
=============  ==================================  ==========================================

Constants are inlined and parameters bound, so each statement built from these
is compiled (and its cache key computed) once: per call that cost more CPU
than the round trip.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..status import RunStatus, StepStatus
from .schema import runs, steps

__all__ = [
    "RUN_LIVE",
    "STEP_LIVE",
    "STEP_OPEN",
    "STEP_PENDING",
    "bind",
    "const",
    "run_is_live",
    "status_in",
]

_Q, _R, _W = StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.WAITING
STEP_LIVE: tuple[str, ...] = (_Q.value, _R.value)
STEP_OPEN: tuple[str, ...] = (_Q.value, _R.value, _W.value)
STEP_PENDING: tuple[str, ...] = (_Q.value, _W.value)
RUN_LIVE: tuple[str, ...] = (
    RunStatus.PENDING.value,
    RunStatus.RUNNING.value,
    RunStatus.WAITING.value,
)


def const(value: str) -> Any:
    """An internal constant inlined into the SQL (never user data)."""
    return sa.literal_column(f"'{value}'")


def status_in(column: Any, values: tuple[str, ...]) -> sa.ColumnElement[bool]:
    """``column`` is one of ``values`` (internal constants), inlined: no list to expand."""
    return sa.or_(*(column == const(v) for v in values))


def run_is_live(now: Any) -> sa.ColumnElement[bool]:
    """``EXISTS``: the step's run is live and not past ``now`` (a value or a bind)."""
    return sa.exists().where(
        runs.c.id == steps.c.run_id,
        status_in(runs.c.status, RUN_LIVE),
        sa.or_(runs.c.deadline_at.is_(None), runs.c.deadline_at > now),
    )


def bind(name: str, type_: Any = sa.String) -> Any:
    """A bound parameter of the given type."""
    return sa.bindparam(name, type_=type_)
