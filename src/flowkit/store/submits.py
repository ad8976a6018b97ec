"""A batch of runs stored in one transaction (``Flow.submit_many``).

:meth:`Runs.create <.runs.Runs.create>` inserts one run and, for a known key,
catches the ``IntegrityError``; a caught error aborts a PostgreSQL transaction, so a
batch cannot do that. Here the runs go in with ``INSERT … ON CONFLICT (flow, key) DO
NOTHING RETURNING id`` (the unique constraint ``uq_flowkit_runs_flow_key``): the ids
returned are the runs created. The keys that conflicted are read back in one
``SELECT`` per thousand keys, with those runs' entry steps still ``queued`` (a submit
of a known key publishes them again). The new runs' first rows — entry steps
``queued``, joins and signal waits ``waiting`` with their counters, an entry signal
wait's deadline, the run's deadline — are the rows ``Runs.create`` makes for one run,
inserted with one statement for all the runs: on PostgreSQL each column is bound as
one array (``INSERT … SELECT … FROM unnest(…)``, a short statement parsed once
whatever the batch's size), on SQLite an executemany.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..errors import StoreError
from ..status import RunStatus, StepStatus
from .db import Database, utcnow
from .rows import Gate, NewStep
from .schema import runs, steps
from .sweep import UNSENT

__all__ = ["NewRun", "Submits", "Submitted", "store_batch"]

#: Keys (or run ids) per ``IN (…)`` list: well under SQLite's and PostgreSQL's
#: limits on bound parameters.
_IN_CHUNK = 1000


@dataclass(frozen=True)
class NewRun:
    """One run of a batch: its id, key, validated input and first rows.

    ``first``, ``waiting`` and ``entry_waits`` are what
    :func:`~flowkit.runtime.plan.initial_rows` plans for it.
    """

    run_id: str
    key: str | None
    input: Any
    first: Sequence[NewStep]
    waiting: Sequence[NewStep] = ()
    entry_waits: Sequence[Gate] = ()


@dataclass
class Submitted:
    """What a batch did for one of its runs.

    ``created``: the run was inserted, and ``steps`` are its entry steps (``timers``
    the deadlines of entry signal waits) to publish. For a key that already named a
    run, ``run_id`` is that run and ``steps`` its entry steps still ``queued``, to
    publish again (the first submit may have raised ``BrokerError`` after its commit).
    """

    run_id: str
    created: bool
    steps: list[NewStep] = field(default_factory=list)
    timers: list[NewStep] = field(default_factory=list)


class Submits:
    """Batches of new runs, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_many(
        self,
        flow: str,
        new: Sequence[NewRun],
        *,
        entries: Sequence[str],
        deadline_ms: int | None = None,
        priority: int | None = None,
        trace_context: dict[str, str] | None = None,
        fingerprint: str | None = None,
    ) -> list[Submitted]:
        """Insert the runs whose key is new, and find the runs of the keys that are not.

        All in one transaction: the runs, their first rows, the reads of the runs
        the known keys name (and their ``entries`` still queued). Returns one
        :class:`Submitted` per run of ``new``, in its order.

        Raises:
            StoreError: the database is unavailable, or a run a key conflicted with
                was deleted while the batch was stored (nothing is stored; try again).
        """
        with self.db.transaction() as conn:
            return store_batch(
                conn,
                flow,
                new,
                entries=entries,
                deadline_ms=deadline_ms,
                priority=priority,
                trace_context=trace_context,
                fingerprint=fingerprint,
            )


def store_batch(
    conn: Connection,
    flow: str,
    new: Sequence[NewRun],
    *,
    entries: Sequence[str],
    deadline_ms: int | None = None,
    priority: int | None = None,
    trace_context: dict[str, str] | None = None,
    fingerprint: str | None = None,
    unsent: bool = False,
) -> list[Submitted]:
    """:meth:`Submits.create_many` on ``conn``, in its transaction, committing nothing.

    Nothing in it can fail on a known key (``ON CONFLICT … DO NOTHING``), so a caller's
    own transaction (:mod:`.outbox`) goes on after a duplicate. ``unsent`` marks the new
    entry steps as never published (:data:`~.sweep.UNSENT`): the sweep's next pass
    publishes them, whatever the evidence.

    Raises:
        StoreError: a run a key conflicted with was deleted meanwhile.
    """
    now = utcnow()
    deadline = None if deadline_ms is None else now + timedelta(milliseconds=deadline_ms)
    planned = [(r, *_entry_waits(r, now)) for r in new]
    created = _insert_runs(conn, flow, planned, now, deadline, priority, trace_context)
    _set_fingerprint(conn, created, fingerprint)
    made = [p for p in planned if p[0].run_id in created]
    _insert_first_rows(conn, made, now, UNSENT if unsent else None)
    known = [r.key for r in new if r.run_id not in created and r.key is not None]
    found = _runs_by_key(conn, flow, known)
    if len(found) < len(set(known)):
        gone = sorted(set(known) - set(found))[:5]
        raise StoreError(
            f"the runs of key(s) {', '.join(map(repr, gone))} of flow {flow!r} were "
            "deleted while this batch was stored; nothing was stored, submit it again"
        )
    queued = _queued_steps(conn, found.values(), entries)
    out = []
    for r, _, timers in planned:
        if r.run_id in created:
            out.append(Submitted(r.run_id, True, list(r.first), timers))
        else:
            assert r.key is not None  # a run without a key never conflicts
            existing = found[r.key]
            out.append(Submitted(existing, False, queued.get(existing, [])))
    return out


def _entry_waits(r: NewRun, now: datetime) -> tuple[list[NewStep], list[NewStep]]:
    """``(waiting, timers)``: the run's waiting rows as an entry signal wait leaves them.

    What :func:`~.gates.start_signal_wait` does after ``Runs.create`` inserts them,
    done before the insert: the wait's deadline is the row's due time, and a timer
    message is needed for it. (The run itself is inserted ``waiting``.)
    """
    waiting, timers = list(r.waiting), []
    for gate in r.entry_waits:
        if gate.signal_timeout_ms is None:
            continue
        due = now + timedelta(milliseconds=gate.signal_timeout_ms)
        (i,) = [i for i, w in enumerate(waiting) if w.name == gate.name]
        step = waiting[i]
        waiting[i] = NewStep(
            id=step.id,
            name=step.name,
            queue=step.queue,
            input=step.input,
            scheduled_at=due,
            pending=step.pending,
        )
        timers.append(
            NewStep(
                id=step.id,
                name=gate.name,
                queue=step.queue,
                input=None,
                scheduled_at=due,
                delay_ms=gate.signal_timeout_ms,
            )
        )
    return waiting, timers


def _insert_runs(
    conn: Connection,
    flow: str,
    planned: Sequence[tuple[NewRun, list[NewStep], list[NewStep]]],
    now: datetime,
    deadline: datetime | None,
    priority: int | None,
    trace_context: dict[str, str] | None,
) -> set[str]:
    """Insert the runs, skipping each whose key the flow already has; the ids inserted."""
    if not planned:
        return set()
    rows = [
        {
            "id": r.run_id,
            "flow": flow,
            "key": r.key,
            # Only the signal is missing: the run waits (run_waits, for one run).
            "status": (RunStatus.WAITING if r.entry_waits else RunStatus.PENDING).value,
            "input": r.input,
            "created_at": now,
            "priority": priority,
            "deadline_at": deadline,
            "trace_context": trace_context,
        }
        for r, _, _ in planned
    ]
    # In key order, so two batches that share keys take their locks in the same order
    # and one waits for the other instead of deadlocking.
    rows.sort(key=lambda row: row["key"] or "")
    if conn.dialect.name == "postgresql":
        return set(conn.execute(_PG_RUNS, _columns(runs, rows)).scalars())
    return set(conn.execute(_SQLITE_RUNS, rows).scalars())


def _insert_first_rows(
    conn: Connection,
    made: Sequence[tuple[NewRun, list[NewStep], list[NewStep]]],
    now: datetime,
    republishes: int | None = None,
) -> None:
    """The created runs' entry steps (``queued``, with ``republishes``) and joins and waits
    (``waiting``)."""
    queued, waiting = StepStatus.QUEUED.value, StepStatus.WAITING.value
    rows = [
        _step_row(r.run_id, s, queued, s.scheduled_at or now, now, republishes)
        for r, _, _ in made
        for s in r.first
    ]
    rows += [_step_row(r.run_id, s, waiting, s.scheduled_at, now) for r, ws, _ in made for s in ws]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_STEPS, _columns(steps, rows))
    else:
        conn.execute(steps.insert(), rows)


def _step_row(
    run_id: str,
    s: NewStep,
    status: str,
    scheduled_at: datetime | None,
    now: datetime,
    republishes: int | None = None,
) -> dict[str, Any]:
    """A step row as :func:`~.inserts.insert_steps` writes it."""
    return {
        "id": s.id,
        "run_id": run_id,
        "name": s.name,
        "item": s.item,
        "status": status,
        "queue": s.queue,
        "attempts": 0,
        "input": s.input,
        "created_at": now,
        "scheduled_at": scheduled_at,
        "pending": s.pending,
        "republishes": republishes,
    }


_RUN_COLUMNS = (
    "id",
    "flow",
    "key",
    "status",
    "input",
    "created_at",
    "priority",
    "deadline_at",
    "trace_context",
)
_STEP_COLUMNS = (
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
    "pending",
    "republishes",
)


def _is_json(column: sa.Column[Any]) -> bool:
    return isinstance(column.type, sa.JSON)


def _unnest_insert(table: sa.Table, names: Sequence[str]) -> postgresql.Insert:
    """``INSERT INTO table (names) SELECT … FROM unnest(:name[], …)`` (PostgreSQL).

    Each column is bound as one array (a JSON column as text, cast back to JSONB), so
    the statement is short and the same for any number of rows: parsed once, where a
    multi-row ``VALUES`` list costs the driver and the server a parse per batch.
    """
    arrays = [
        sa.bindparam(n, type_=postgresql.ARRAY(sa.Text if _is_json(c) else c.type))
        for n, c in ((n, table.c[n]) for n in names)
    ]
    rows = sa.func.unnest(*arrays).table_valued(*names).render_derived()
    values = [
        sa.cast(rows.c[n], postgresql.JSONB) if _is_json(table.c[n]) else rows.c[n] for n in names
    ]
    return postgresql.insert(table).from_select(list(names), sa.select(*values))


def _columns(table: sa.Table, rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The rows as one list per column, for :func:`_unnest_insert` (JSON as text)."""
    return {
        n: [json.dumps(r[n]) for r in rows] if _is_json(table.c[n]) else [r[n] for r in rows]
        for n in rows[0]
    }


_PG_RUNS = (
    _unnest_insert(runs, _RUN_COLUMNS)
    .on_conflict_do_nothing(index_elements=[runs.c.flow, runs.c.key])
    .returning(runs.c.id)
)
_PG_STEPS = _unnest_insert(steps, _STEP_COLUMNS)
_SQLITE_RUNS = (
    sqlite.insert(runs)
    .on_conflict_do_nothing(index_elements=[runs.c.flow, runs.c.key])
    .returning(runs.c.id)
)


def _runs_by_key(conn: Connection, flow: str, keys: Sequence[str]) -> dict[str, str]:
    """``{key: run_id}`` of the flow's runs with these keys."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(keys))):
        rows = conn.execute(
            sa.select(runs.c.key, runs.c.id).where(runs.c.flow == flow, runs.c.key.in_(chunk))
        )
        found.update({r[0]: r[1] for r in rows})
    return found


def _queued_steps(
    conn: Connection, run_ids: Iterable[str], names: Sequence[str]
) -> dict[str, list[NewStep]]:
    """``{run_id: [its steps among names still queued]}`` (ids, names and queues only)."""
    out: dict[str, list[NewStep]] = {}
    if not names:
        return out
    for chunk in _chunks(sorted(set(run_ids))):
        rows = conn.execute(
            sa.select(steps.c.run_id, steps.c.id, steps.c.name, steps.c.queue).where(
                steps.c.run_id.in_(chunk),
                steps.c.name.in_(list(names)),
                steps.c.status == StepStatus.QUEUED.value,
            )
        )
        for run_id, step_id, name, queue in rows:
            out.setdefault(run_id, []).append(
                NewStep(id=step_id, name=name, queue=queue, input=None)
            )
    return out


def _set_fingerprint(conn: Connection, run_ids: Iterable[str], fingerprint: str | None) -> None:
    """Record the flow definition's fingerprint on the runs just created."""
    if fingerprint is None:
        return
    for chunk in _chunks(sorted(run_ids)):
        conn.execute(runs.update().where(runs.c.id.in_(chunk)).values(fingerprint=fingerprint))


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield list(values[start : start + _IN_CHUNK])
