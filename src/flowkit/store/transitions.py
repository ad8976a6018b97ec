"""The state machine of runs and steps: each guard defined once, every guarded statement.

Every change of a run's or a step's status in flowkit is one of the statements
below, guarded by the status it starts from (``UPDATE … WHERE status IN (…)``),
so a duplicate message, a concurrent worker or a late completion matches no row
and changes nothing. The statements are built once, with bound parameters; the
hot path's one-round-trip variants (PostgreSQL CTEs) are built from the same
pieces, not copied.

The guards (:mod:`.guards`) say which statuses a statement may start from.

Steps (status and event → next status, by which statement):

===========  ===============================  ==============  ==============================
from         event                            to              statement
===========  ===============================  ==============  ==============================
(new)        submitted / planned              queued          inserted by :mod:`.runs`
(new)        a join or signal wait planned    waiting         inserted with ``pending``
queued       message claims it                running         :data:`CLAIM`
queued       over a concurrency limit         queued, waits   :func:`.handoff.refuse`
queued       a holder freed its slot          queued, due     :func:`.handoff.hand_over`
(new)        parent completed, chained        running         :data:`COMPLETE_AND_CLAIM`
running      redelivery of its own message    running         :data:`CLAIM` (takeover, logged)
live         function returned                succeeded       :func:`record` (or a CTE variant)
live         settled item failed for good     failed          :func:`record`
live         attempt failed, retries left     queued          :func:`schedule_retry`
live         attempt failed for good          failed          :func:`fail_step`
live         run already over                 cancelled       :func:`cancel_if_run_over`
running      lease passed (worker gone)       queued          :func:`requeue_expired`, :mod:`.sweep`
running      chain's message came back        queued          :func:`release_chain`
running      its worker's heartbeat stopped   queued          :meth:`.sweep.Sweep.run_pass`
waiting      counter moved                    waiting         :func:`move_counter`
waiting      counter reached zero             queued          :func:`open_step`
waiting      signal wait timed out            queued/failed   :func:`open_step`, :func:`fail_wait`
pending      run ends                         skipped         :func:`skip_pending`
pending      run cancelled or timed out       cancelled       :func:`skip_pending`
finished     redrive                          queued / gone   :func:`requeue_items`, deleted
===========  ===============================  ==============  ==============================

An attempt that does not succeed is logged (:mod:`.attempts`) in the same transaction:
``retried`` by :func:`schedule_retry`, ``failed`` by :func:`fail_step`, ``lost`` by
:func:`requeue_expired` and by a :data:`CLAIM` takeover (of a row read by ``running_attempt``).

Runs:

=========  ==============================  =========  ====================================
from       event                           to         statement
=========  ==============================  =========  ====================================
(new)      submitted                       pending    inserted by :mod:`.runs`
pending    first step claimed              running    :data:`CLAIM_AND_START`, :func:`start_run`
live       only a signal is missing        waiting    :func:`run_waits`
waiting    the signal (or its timeout)     running    :func:`run_resumes`
live       last step succeeded or Stop     succeeded  :func:`finish_run`, :data:`COMPLETE_AND_END`
live       a step failed for good          failed     :func:`finish_run`
live       cancel                          cancelled  :func:`finish_run`
live       deadline passed                 timed_out  :func:`finish_run`
finished   redrive                         running    :func:`restart_run`
=========  ==============================  =========  ====================================
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import RunStatus, StepStatus
from .attempts import ATTEMPT_COLUMNS
from .guards import (
    RUN_LIVE,
    STEP_LIVE,
    STEP_OPEN,
    STEP_PENDING,
    bind,
    const,
    run_is_live,
    status_in,
)
from .inserts import insert_claimed, insert_skipped, insert_steps
from .schema import JSONType, Timestamp, runs, steps

__all__ = [
    "CLAIM",
    "CLAIM_AND_START",
    "COMPLETE_AND_CLAIM",
    "COMPLETE_AND_END",
    "COMPLETE_WITH_SUCCESSOR",
    "cancel_if_run_over",
    "error_type_of",
    "fail_step",
    "fail_wait",
    "finish_run",
    "insert_claimed",
    "insert_skipped",
    "insert_steps",
    "move_counter",
    "open_step",
    "record",
    "release_chain",
    "requeue_expired",
    "requeue_items",
    "restart_run",
    "run_resumes",
    "run_waits",
    "schedule_retry",
    "skip_pending",
    "start_run",
]

_Q, _R, _W = StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.WAITING
_NOW = bind("now", Timestamp)
_SID = bind("sid")
_MID = bind("mid")
_RID = bind("rid")


def _step(*guard: sa.ColumnElement[bool]) -> Any:
    return steps.update().where(steps.c.id == _SID, *guard)


def _run(*guard: sa.ColumnElement[bool]) -> Any:
    return runs.update().where(runs.c.id == _RID, *guard)


# -- claim ------------------------------------------------------------------------
CLAIM = (
    _step(
        run_is_live(_NOW),
        # The row decides when a timer is due; an early message is re-sent.
        sa.or_(steps.c.scheduled_at.is_(None), steps.c.scheduled_at <= bind("early", Timestamp)),
        sa.or_(
            steps.c.status == const(_Q.value),
            sa.and_(
                steps.c.status == const(_R.value),
                steps.c.claimed_by == _MID,
                bind("redelivered", sa.Boolean),
            ),
        ),
    )
    .values(
        status=const(_R.value),
        attempts=steps.c.attempts + sa.literal_column("1"),
        claimed_by=_MID,
        started_at=_NOW,
        lease_until=bind("lease", Timestamp),
        limit_key=bind("lkey"),
        # No longer waiting for a concurrency slot (store/handoff.py).
        waits_for=sa.null(),
        # Which worker process holds it (flowkit_workers.id), for the dashboard.
        worker_id=bind("wid"),
    )
    .returning(
        steps.c.run_id, steps.c.name, steps.c.attempts, steps.c.input, steps.c.item, steps.c.usage
    )
)
"""queued → running (or a takeover by its own redelivered message)."""

_START = runs.update().values(status=const(RunStatus.RUNNING.value), started_at=_NOW)
_CLAIMED = CLAIM.cte("claimed")
#: :data:`CLAIM`, and the run pending → running, in one statement (PostgreSQL:
#: a data-modifying CTE runs to completion even if nothing reads it).
CLAIM_AND_START = sa.select(_CLAIMED).add_cte(
    _START.where(
        runs.c.id == sa.select(_CLAIMED.c.run_id).scalar_subquery(),
        runs.c.status == const(RunStatus.PENDING.value),
    )
    .returning(runs.c.id)
    .cte("started")
)
_START_RUN = _START.where(runs.c.id == _RID, runs.c.status == const(RunStatus.PENDING.value))


def start_run(conn: Connection, run_id: str, now: datetime) -> None:
    """pending → running (an entry step was claimed)."""
    conn.execute(_START_RUN, {"rid": run_id, "now": now})


# -- a step's outcome -------------------------------------------------------------
_RECORD = _step(status_in(steps.c.status, STEP_LIVE), run_is_live(_NOW)).values(
    status=bind("status"),
    output=bind("output", JSONType),
    error=bind("error", JSONType),
    claimed_by=_MID,
    finished_at=_NOW,
    lease_until=sa.null(),
    usage=bind("usage", JSONType),
    trace_context=bind("trace", JSONType),
)


def record(conn: Connection, params: dict[str, Any]) -> bool:
    """live → succeeded / failed with its output or error, if its run is live."""
    return bool(conn.execute(_RECORD, params).rowcount == 1)


_DONE = _RECORD.returning(steps.c.run_id).cte("done")
_NEW_STEP = ["id", "run_id", "name", "item", "status", "queue", "attempts", "input"]
#: what a successor claimed in its parent's completion (a chained step) also sets
_CHAINED = ["claimed_by", "started_at", "lease_until", "worker_id"]


def _with_successor(claimed: bool) -> Any:
    """:func:`record`, and the one successor inserted if it matched: one statement.

    ``claimed``: the successor is inserted ``running``, claimed by the same message
    (attempt 1, its lease, this worker), for the same thread to run next.
    """
    values = [
        bind("nid"),
        bind("rid"),
        bind("nname"),
        bind("nitem", sa.Integer),
        const((_R if claimed else _Q).value),
        bind("nqueue"),
        sa.literal_column("1" if claimed else "0"),
        bind("ninput", JSONType),
        _NOW,
        bind("nsched", Timestamp),
    ]
    columns = [*_NEW_STEP, "created_at", "scheduled_at"]
    if claimed:
        columns += _CHAINED
        values += [_MID, _NOW, bind("lease", Timestamp), bind("wid")]
    return (
        steps.insert()
        .from_select(columns, sa.select(*values).select_from(_DONE))
        .returning(steps.c.id)
    )


#: :func:`record`, and the one successor inserted ``queued`` if it matched: one statement.
COMPLETE_WITH_SUCCESSOR = _with_successor(claimed=False)
#: :func:`record`, and the one successor inserted ``running`` for this thread (chained).
COMPLETE_AND_CLAIM = _with_successor(claimed=True)
_ENDED = (
    runs.update()
    .where(
        runs.c.id == sa.select(_DONE.c.run_id).scalar_subquery(),
        status_in(runs.c.status, RUN_LIVE),
        # Every CTE sees the same snapshot, where this step is still live.
        ~sa.exists().where(
            steps.c.run_id == runs.c.id,
            status_in(steps.c.status, STEP_OPEN),
            steps.c.id != _SID,
        ),
    )
    .values(
        status=const(RunStatus.SUCCEEDED.value),
        output=bind("output", JSONType),
        error=bind("error", JSONType),
        finished_at=_NOW,
    )
    .returning(runs.c.id)
    .cte("ended")
)
#: :func:`record` the only sink, and end its run succeeded with that output if no
#: other step is open: ``(recorded, ended)`` counts in one statement.
COMPLETE_AND_END = sa.select(
    sa.select(sa.func.count()).select_from(_DONE).scalar_subquery(),
    sa.select(sa.func.count()).select_from(_ENDED).scalar_subquery(),
)

_RETRY = (
    _step(status_in(steps.c.status, STEP_LIVE))
    .values(
        status=const(_Q.value),
        error=bind("error", JSONType),
        scheduled_at=bind("due", Timestamp),
        lease_until=sa.null(),
        usage=bind("usage", JSONType),
    )
    .returning(*ATTEMPT_COLUMNS)
)


def schedule_retry(conn: Connection, step_id: str, error: Any, due: datetime, usage: Any) -> Any:
    """live → queued, due at ``due``, with the attempt's error: its attempt row, or ``None``."""
    params = {"sid": step_id, "error": error, "due": due, "usage": usage}
    return conn.execute(_RETRY, params).first()


_FAIL = (
    _step(status_in(steps.c.status, STEP_LIVE))
    .values(
        status=const(StepStatus.FAILED.value),
        error=bind("error", JSONType),
        finished_at=_NOW,
        lease_until=sa.null(),
        usage=bind("usage", JSONType),
    )
    .returning(*ATTEMPT_COLUMNS)
)


def fail_step(conn: Connection, step_id: str, error: Any, now: datetime, usage: Any) -> Any:
    """live → failed (its final attempt): its attempt row, or ``None``."""
    params = {"sid": step_id, "error": error, "now": now, "usage": usage}
    return conn.execute(_FAIL, params).first()


_CANCEL_LATE = _step(status_in(steps.c.status, STEP_LIVE), ~run_is_live(_NOW)).values(
    status=const(StepStatus.CANCELLED.value), finished_at=_NOW, lease_until=sa.null()
)


def cancel_if_run_over(conn: Connection, step_id: str, now: datetime) -> bool:
    """live → cancelled: a step finishing after its run ended (cancelled, timed out)."""
    return bool(conn.execute(_CANCEL_LATE, {"sid": step_id, "now": now}).rowcount == 1)


def requeue_expired(conn: Connection, ids: list[str], cutoff: datetime) -> list[Any]:
    """running → queued for steps whose lease passed ``cutoff``: their (lost) attempt rows."""
    return list(
        conn.execute(
            steps.update()
            .where(steps.c.id.in_(ids), steps.c.status == _R.value, steps.c.lease_until < cutoff)
            .values(status=_Q.value, lease_until=None)
            .returning(*ATTEMPT_COLUMNS)
        ).all()
    )


# -- joins and signal waits ---------------------------------------------------------
_MOVE = (
    steps.update()
    .where(steps.c.run_id == _RID, steps.c.name == bind("gname"), steps.c.status == const(_W.value))
    .values(pending=steps.c.pending + bind("delta", sa.Integer))
    .returning(steps.c.id, steps.c.pending, steps.c.queue)
)


def move_counter(conn: Connection, run_id: str, name: str, delta: int) -> Any:
    """waiting → waiting, its counter moved: ``(id, pending, queue)``, or ``None``."""
    return conn.execute(_MOVE, {"rid": run_id, "gname": name, "delta": delta}).first()


def open_step(
    conn: Connection, step_id: str, payload: Any, now: datetime, *, only_signal_left: bool = False
) -> Any:
    """waiting → queued with its gathered input: ``(queue,)``, or ``None`` if not waiting.

    ``only_signal_left``: a signal wait that timed out, still waiting only for its signal.
    """
    guard = [steps.c.id == step_id, steps.c.status == _W.value]
    if only_signal_left:
        guard.append(steps.c.pending == 1)
    return conn.execute(
        steps.update()
        .where(*guard)
        .values(status=_Q.value, input=payload, scheduled_at=now, pending=0)
        .returning(steps.c.queue)
    ).first()


def fail_wait(conn: Connection, step_id: str, error: Any, now: datetime) -> bool:
    """waiting → failed: a signal wait passed its deadline."""
    res = conn.execute(
        steps.update()
        .where(steps.c.id == step_id, steps.c.status == _W.value)
        .values(status=StepStatus.FAILED.value, error=error, finished_at=now)
    )
    return bool(res.rowcount == 1)


def skip_pending(
    conn: Connection, run_id: str, now: datetime, status: StepStatus = StepStatus.SKIPPED
) -> None:
    """queued / waiting → skipped (or cancelled): the run is ending."""
    conn.execute(
        steps.update()
        .where(steps.c.run_id == run_id, steps.c.status.in_(STEP_PENDING))
        .values(status=status.value, finished_at=now, lease_until=None)
    )


def requeue_items(conn: Connection, run_id: str, name: str, now: datetime) -> None:
    """A redrive: the items of ``name`` that did not succeed → queued, as new."""
    conn.execute(
        steps.update()
        .where(
            steps.c.run_id == run_id,
            steps.c.name == name,
            steps.c.status != StepStatus.SUCCEEDED.value,
        )
        .values(
            status=_Q.value,
            attempts=0,
            error=None,
            claimed_by=None,
            scheduled_at=now,
            started_at=None,
            finished_at=None,
            lease_until=None,
        )
    )


# -- runs -------------------------------------------------------------------------
def finish_run(
    conn: Connection,
    run_id: str,
    status: RunStatus,
    now: datetime,
    *,
    output: Any = None,
    error: Any = None,
    stop_reason: str | None = None,
) -> bool:
    """live → succeeded / failed / cancelled / timed_out; ``False`` if already over.

    Every run's end goes through here (or :data:`COMPLETE_AND_END`, which only
    succeeds), so this is where ``error_type`` is copied from ``error["type"]``
    for the run queries' error filter.
    """
    res = conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.status.in_(RUN_LIVE))
        .values(
            status=status.value,
            output=output,
            error=error,
            error_type=error_type_of(error),
            stop_reason=stop_reason,
            finished_at=now,
        )
    )
    return bool(res.rowcount == 1)


def error_type_of(error: Any) -> str | None:
    """The ``type`` of a recorded error (cut to the column's 100 characters), if any."""
    kind = error.get("type") if isinstance(error, dict) else None
    return str(kind)[:100] if kind else None


def run_waits(conn: Connection, run_id: str) -> None:
    """live → waiting: only a signal is missing."""
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.status.in_(RUN_LIVE))
        .values(status=RunStatus.WAITING.value)
    )


def run_resumes(conn: Connection, run_id: str) -> None:
    """waiting → running: the signal came, or its wait timed out."""
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.status == RunStatus.WAITING.value)
        .values(status=RunStatus.RUNNING.value)
    )


def restart_run(conn: Connection, run_id: str) -> None:
    """finished → running: a redrive (the caller checked, under the row lock, that it ended)."""
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            status=RunStatus.RUNNING.value,
            error=None,
            error_type=None,
            output=None,
            stop_reason=None,
            finished_at=None,
        )
    )


def release_chain(conn: Connection, run_id: str, message_id: str) -> list[Any]:
    """running → queued: the chained steps of a message that came back (its worker died).

    Returns their attempt rows (the attempts were lost).
    """
    return list(
        conn.execute(
            steps.update()
            .where(
                steps.c.run_id == run_id,
                steps.c.claimed_by == message_id,
                steps.c.status == _R.value,
            )
            .values(status=_Q.value, lease_until=None)
            .returning(*ATTEMPT_COLUMNS)
        ).all()
    )
