"""One-round-trip versions of the statements every step pays for.

A step's claim is a single ``UPDATE … RETURNING`` (on PostgreSQL autocommitted,
and for an entry step also starting its run). On PostgreSQL a completion with
one successor is a single statement whose CTE records the output and inserts
the successor only if that UPDATE matched, and the run's only sink records its
output and ends the run the same way: the guarded transitions of :mod:`.repo`,
atomic as one statement, without ``BEGIN`` and ``COMMIT`` round trips.
Everything else (joins, limits, SQLite's completions) takes the general path.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import RunStatus, StepStatus
from .gates import LIVE_RUN, run_is_live, status_in
from .rows import NewStep
from .schema import JSONType, Timestamp, runs, steps

_LIVE_STEP = (StepStatus.QUEUED.value, StepStatus.RUNNING.value)
# A message may arrive this early for its step's due time (clock skew, jitter).
_EARLY = timedelta(milliseconds=500)

# The statements are built once, with bound parameters: building a Core
# statement and its cache key per call cost more CPU than the round trip.


def _const(value: str) -> Any:
    return sa.literal_column(f"'{value}'")


def _now() -> Any:
    return sa.bindparam("now", type_=Timestamp)


def _sid() -> Any:
    return sa.bindparam("sid", type_=sa.String)


def _mid() -> Any:
    return sa.bindparam("mid", type_=sa.String)


# -- the claim, and for an entry step the claim that also starts its run ---------
_CLAIM = (
    steps.update()
    .where(
        steps.c.id == _sid(),
        run_is_live(_now()),
        # The row decides when a timer is due; an early message is re-sent.
        sa.or_(
            steps.c.scheduled_at.is_(None),
            steps.c.scheduled_at <= sa.bindparam("early", type_=Timestamp),
        ),
        sa.or_(
            steps.c.status == _const(StepStatus.QUEUED.value),
            sa.and_(
                steps.c.status == _const(StepStatus.RUNNING.value),
                steps.c.claimed_by == _mid(),
                sa.bindparam("redelivered", type_=sa.Boolean),
            ),
        ),
    )
    .values(
        status=_const(StepStatus.RUNNING.value),
        attempts=steps.c.attempts + sa.literal_column("1"),
        claimed_by=_mid(),
        started_at=_now(),
        lease_until=sa.bindparam("lease", type_=Timestamp),
        limit_key=sa.bindparam("lkey", type_=sa.String),
    )
    .returning(
        steps.c.run_id,
        steps.c.name,
        steps.c.attempts,
        steps.c.input,
        steps.c.item,
        steps.c.usage,
    )
)
_CLAIMED = _CLAIM.cte("claimed")
_STARTED = (
    runs.update()
    .where(
        runs.c.id == sa.select(_CLAIMED.c.run_id).scalar_subquery(),
        runs.c.status == _const(RunStatus.PENDING.value),
    )
    .values(status=_const(RunStatus.RUNNING.value), started_at=_now())
    .returning(runs.c.id)
    .cte("started")
)
# PostgreSQL runs a data-modifying CTE to completion even if nothing reads it.
_CLAIM_START = sa.select(_CLAIMED).add_cte(_STARTED)


def claim(
    conn: Connection,
    step_id: str,
    message_id: str,
    *,
    lease_ms: int,
    redelivered: bool,
    now: datetime,
    limit_key: str | None = None,
    starts_run: bool = False,
) -> Any:
    """The guarded claim, ``UPDATE … RETURNING``: the step's row if this message may run it.

    ``starts_run`` (PostgreSQL only: a data-modifying CTE) also moves the run
    from pending to running in the same statement.
    """
    return conn.execute(
        _CLAIM_START if starts_run else _CLAIM,
        {
            "sid": step_id,
            "mid": message_id,
            "now": now,
            "early": now + _EARLY,
            "redelivered": redelivered,
            "lease": now + timedelta(milliseconds=lease_ms),
            "lkey": limit_key,
        },
    ).first()


# -- a completion: with its one successor, or as the run's only sink -------------
_DONE = (
    steps.update()
    .where(steps.c.id == _sid(), status_in(steps.c.status, _LIVE_STEP), run_is_live(_now()))
    .values(
        status=_const(StepStatus.SUCCEEDED.value),
        output=sa.bindparam("output", type_=JSONType),
        error=sa.null(),
        claimed_by=_mid(),
        finished_at=_now(),
        lease_until=sa.null(),
        usage=sa.bindparam("usage", type_=JSONType),
    )
    .returning(steps.c.run_id)
    .cte("done")
)
_COMPLETE = (
    steps.insert()
    .from_select(
        [
            "id",
            "run_id",
            "name",
            "item",
            "status",
            "queue",
            "attempts",
            "input",
            "created_at",
            "scheduled_at",
        ],
        sa.select(
            sa.bindparam("nid", type_=sa.String),
            sa.bindparam("rid", type_=sa.String),
            sa.bindparam("nname", type_=sa.String),
            sa.bindparam("nitem", type_=sa.Integer),
            _const(StepStatus.QUEUED.value),
            sa.bindparam("nqueue", type_=sa.String),
            sa.literal_column("0"),
            sa.bindparam("ninput", type_=JSONType),
            _now(),
            sa.bindparam("nsched", type_=Timestamp),
        ).select_from(_DONE),
    )
    .returning(steps.c.id)
)
_RUN_ENDED = (
    runs.update()
    .where(
        runs.c.id == sa.select(_DONE.c.run_id).scalar_subquery(),
        status_in(runs.c.status, LIVE_RUN),
        # Every CTE sees the same snapshot, where this step is still live.
        ~sa.exists().where(
            steps.c.run_id == runs.c.id,
            status_in(steps.c.status, _LIVE_STEP),
            steps.c.id != _sid(),
        ),
    )
    .values(
        status=_const(RunStatus.SUCCEEDED.value),
        output=sa.bindparam("output", type_=JSONType),
        error=sa.bindparam("noerror", type_=JSONType),
        finished_at=_now(),
    )
    .returning(runs.c.id)
    .cte("ended")
)
_COMPLETE_END = sa.select(
    sa.select(sa.func.count()).select_from(_DONE).scalar_subquery(),
    sa.select(sa.func.count()).select_from(_RUN_ENDED).scalar_subquery(),
)


def complete_with_successor(
    conn: Connection,
    *,
    step_id: str,
    message_id: str,
    run_id: str,
    output: Any,
    usage: Any,
    successor: NewStep,
    now: datetime,
) -> bool:
    """Record the output and insert the successor in one statement; False if not ours."""
    params = {
        "sid": step_id,
        "mid": message_id,
        "now": now,
        "output": output,
        "usage": usage,
        "nid": successor.id,
        "rid": run_id,
        "nname": successor.name,
        "nitem": successor.item,
        "nqueue": successor.queue,
        "ninput": successor.input,
        "nsched": successor.scheduled_at or now,
    }
    return conn.execute(_COMPLETE, params).first() is not None


def complete_and_end(
    conn: Connection,
    *,
    step_id: str,
    message_id: str,
    output: Any,
    usage: Any,
    now: datetime,
) -> tuple[bool, bool]:
    """Record the only sink's output and end its run with it: ``(recorded, ended)``.

    ``ended`` is False if another step of the run is still live (the caller
    then decides under the run's lock, as the general path does).
    """
    row = conn.execute(
        _COMPLETE_END,
        {
            "sid": step_id,
            "mid": message_id,
            "now": now,
            "output": output,
            "usage": usage,
            "noerror": None,
        },
    ).one()
    return bool(row[0]), bool(row[1])
