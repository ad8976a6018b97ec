"""Retention: finished runs deleted with every row keyed by their id, a small batch at a time.

``flowkit db prune`` (all batches) and the in-worker sweep (one batch per pass, when
``FLOWKIT_RETENTION`` is set) both come here. A batch is one transaction: it picks up
to ``limit`` finished runs (a terminal status, ended before the cutoff), deletes their
rows in every table keyed by run id (:data:`CHILDREN`: steps, signals, attempts), then
the runs themselves. Without a status or flow filter it also deletes the rate log's
and the dead letters' rows older than the cutoff, a batch of each.

What is never deleted: a run that is not terminal (pending, running, waiting), whatever
its age; the run delete repeats the status guard. On PostgreSQL the runs are picked
``FOR UPDATE SKIP LOCKED``: a redrive (which locks the run row to turn it back into a
live one) either commits first, and the run is no longer picked, or waits for the
batch and finds the run gone; two prunes at once take different runs.

The runs are found through the ``created_at`` indexes (a run ends after it starts, so a
run finished before the cutoff was created before it): ``ix_flowkit_runs_created``, or
with a filter ``ix_flowkit_runs_status_created`` and ``ix_flowkit_runs_flow_created``.
No index on ``finished_at`` is needed, so no run's end pays for one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ..errors import ConfigurationError
from ..retention import TERMINAL
from ..status import RunStatus
from .db import Database
from .schema import attempts, dead_letters, rate_log, runs, signals, steps
from .sweep import DUTY_LOCK

__all__ = ["CHILDREN", "TERMINAL", "Prune", "Pruned", "everything"]

#: Every table with a foreign key to ``flowkit_runs``, deleted before the runs.
CHILDREN = (steps, signals, attempts)
#: The most runs one batch may take (SQLite binds each id as a parameter).
MAX_BATCH = 10_000
_OLD = ("dead_letters", "rate_log")
_WORDS = {"dead_letters": "dead letters", "rate_log": "rate-log rows"}


@dataclass(frozen=True)
class Pruned:
    """How many rows were (or, counted for a dry run, would be) deleted, per table."""

    runs: int = 0
    steps: int = 0
    signals: int = 0
    attempts: int = 0
    dead_letters: int = 0
    rate_log: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(*(a + b for a, b in zip(self.counts(), other.counts(), strict=True)))

    def counts(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def items(self, *, old: bool = True) -> Iterator[tuple[str, int]]:
        """``(what, rows)`` pairs in words, runs first; without the dead letters and the
        rate log unless ``old`` (a filtered prune leaves them)."""
        for f in fields(self):
            if old or f.name not in _OLD:
                yield _WORDS.get(f.name, f.name), getattr(self, f.name)

    @property
    def total(self) -> int:
        return sum(self.counts())


class Prune:
    """Delete finished runs older than a cutoff, over one :class:`~.db.Database`.

    Every method takes the same selection: ``before`` (runs that ended before it),
    ``statuses`` (terminal statuses only; default all four) and ``flows`` (default
    every flow).

    Raises:
        ConfigurationError: a status that is not terminal, or a batch size out of range.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def batch(
        self,
        *,
        before: datetime,
        statuses: Collection[RunStatus] = TERMINAL,
        flows: Collection[str] = (),
        limit: int = 1000,
        duty: bool = False,
    ) -> Pruned | None:
        """One transaction: up to ``limit`` runs with their rows (and up to ``limit``
        rate-log rows and dead letters). With ``duty``, only while holding the sweep's
        duty (:data:`~.sweep.DUTY_LOCK` on PostgreSQL): ``None`` when another process
        holds it now."""
        picked = _picked(before, _statuses(statuses), flows)
        limit = _limit(limit)
        with self.db.transaction() as conn:
            if duty and self.db.fast and not _take_duty(conn):
                return None
            # A batch lost in a crash is deleted again by the next one: no WAL flush wait.
            self.db.wait_for_wal(conn, False)
            select = picked.order_by(runs.c.created_at).limit(limit)
            if self.db.fast:
                select = select.with_for_update(skip_locked=True)
            ids = list(conn.execute(select).scalars())
            done = _delete_runs(conn, ids, statuses, array=self.db.fast)
            if everything(statuses, flows):
                done = done + _delete_old(conn, before, limit)
        return done

    def all(
        self,
        *,
        before: datetime,
        statuses: Collection[RunStatus] = TERMINAL,
        flows: Collection[str] = (),
        batch: int = 1000,
        rate: float | None = None,
        progress: Callable[[Pruned], None] | None = None,
    ) -> Pruned:
        """Batches of ``batch`` runs until none is left; the total. ``progress`` is
        called with the running total after each batch.

        Parameters:
            rate: at most this many runs a second on average (a pause between batches),
                to leave the database to the workers; ``None``: as fast as it goes.
        """
        total = Pruned()
        started = time.monotonic()
        while True:
            done = self.batch(before=before, statuses=statuses, flows=flows, limit=batch)
            assert done is not None  # no duty asked for: every batch runs
            total = total + done
            if progress is not None and done.total:
                progress(total)
            if max(done.runs, done.dead_letters, done.rate_log) < batch:
                return total  # a short batch: nothing more was there
            if rate is not None:
                ahead = started + total.runs / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing, not synchronisation: nothing waits on it

    def count(
        self,
        *,
        before: datetime,
        statuses: Collection[RunStatus] = TERMINAL,
        flows: Collection[str] = (),
    ) -> Pruned:
        """What :meth:`all` would delete now, deleting nothing (``--dry-run``)."""
        picked = _picked(before, _statuses(statuses), flows)
        with self.db.transaction() as conn:

            def rows(table: sa.Table, *where: Any) -> int:
                stmt = sa.select(sa.func.count()).select_from(table).where(*where)
                return int(conn.execute(stmt).scalar_one())

            found = [
                int(
                    conn.execute(
                        sa.select(sa.func.count()).select_from(picked.subquery())
                    ).scalar_one()
                )
            ]
            found += [rows(child, child.c.run_id.in_(picked)) for child in CHILDREN]
            if everything(statuses, flows):
                found += [
                    rows(dead_letters, dead_letters.c.created_at < before),
                    rows(rate_log, rate_log.c.at < before),
                ]
        return Pruned(*found)


def _picked(before: datetime, statuses: tuple[str, ...], flows: Collection[str]) -> sa.Select[Any]:
    """The ids of the runs that may go: terminal, ended before ``before``."""
    select = sa.select(runs.c.id).where(
        runs.c.created_at < before,  # implied by the end, and what the indexes are on
        runs.c.status.in_(statuses),
        sa.or_(runs.c.finished_at < before, runs.c.finished_at.is_(None)),
        *_not_awaited(),
    )
    if flows:
        select = select.where(runs.c.flow.in_(sorted(flows)))
    return select


def _not_awaited() -> list[sa.ColumnElement[bool]]:
    """The runs a live parent still waits on are kept. There are none yet: when child
    flows exist, this is where ``NOT EXISTS (a live parent run waiting on this one)``
    goes, and every statement of this module picks runs through it."""
    return []


def _delete_runs(
    conn: Connection, ids: list[str], statuses: Collection[RunStatus], *, array: bool
) -> Pruned:
    """The rows of ``ids`` in every child table, then the runs (still terminal)."""
    if not ids:
        return Pruned()
    children = [
        int(conn.execute(sa.delete(child).where(_among(child.c.run_id, ids, array))).rowcount)
        for child in CHILDREN
    ]
    gone = conn.execute(
        sa.delete(runs).where(_among(runs.c.id, ids, array), runs.c.status.in_(_statuses(statuses)))
    ).rowcount
    return Pruned(int(gone), *children)


def _among(column: sa.ColumnElement[Any], ids: list[str], array: bool) -> sa.ColumnElement[bool]:
    """``column`` is one of ``ids``: on PostgreSQL one array parameter (``= ANY(:ids)``),
    whose statement is the same text whatever the count, instead of a parameter per id."""
    if array:
        return column == sa.any_(sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.String)))
    return column.in_(ids)


def _delete_old(conn: Connection, before: datetime, limit: int) -> Pruned:
    """Up to ``limit`` dead letters and rate-log rows older than ``before``."""
    letters = sa.select(dead_letters.c.id).where(dead_letters.c.created_at < before).limit(limit)
    logged = sa.select(rate_log.c.id).where(rate_log.c.at < before).limit(limit)
    n_letters = conn.execute(sa.delete(dead_letters).where(dead_letters.c.id.in_(letters)))
    n_logged = conn.execute(sa.delete(rate_log).where(rate_log.c.id.in_(logged)))
    return Pruned(dead_letters=int(n_letters.rowcount), rate_log=int(n_logged.rowcount))


def everything(statuses: Collection[RunStatus], flows: Collection[str]) -> bool:
    """No filter: the rate log and the dead letters are pruned too."""
    return not flows and set(_statuses(statuses)) == {s.value for s in TERMINAL}


def _statuses(statuses: Collection[RunStatus]) -> tuple[str, ...]:
    values = tuple(sorted({RunStatus(s).value for s in statuses}))
    live = [s for s in values if not RunStatus(s).terminal]
    if live or not values:
        raise ConfigurationError(
            f"only finished runs can be pruned, not {', '.join(live) or 'no status'} "
            f"(statuses: {', '.join(s.value for s in TERMINAL)})"
        )
    return values


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_BATCH:
        raise ConfigurationError(f"a prune batch must be 1..{MAX_BATCH} runs, got {limit}")
    return limit


def _take_duty(conn: Connection) -> bool:
    got = conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(DUTY_LOCK))).scalar()
    return bool(got)
