"""Reading runs and steps: what ``runs list``, ``runs show``, ``Run.result()`` and status need.

Each query is one short transaction; rows become the plain records of
:mod:`flowkit.records` in one place (:func:`run_info`, :func:`step_info`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import Any

import sqlalchemy as sa

from ..records import AttemptInfo, RunInfo, StepInfo
from ..status import RunStatus, StepStatus
from .attempts import attempts_of
from .db import Database, aware, utcnow
from .guards import RUN_LIVE
from .rows import ReceivedSignal, SignalWait, StepRow
from .schema import runs, signals, steps

__all__ = ["Reads", "run_info", "step_info"]


class Reads:
    """Read-only queries over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get_run(self, run_id: str) -> RunInfo | None:
        with self.db.transaction() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else run_info(row)

    def run_state(self, run_id: str) -> tuple[str, Any, Any, str | None] | None:
        """``(status, output, error, stop_reason)``: the cheap read ``Run.result()`` polls."""
        with self.db.transaction() as conn:
            row = conn.execute(
                sa.select(runs.c.status, runs.c.output, runs.c.error, runs.c.stop_reason).where(
                    runs.c.id == run_id
                )
            ).first()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def list_runs(
        self, *, flow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[RunInfo]:
        """The newest runs, optionally of one flow and one status."""
        stmt = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if flow is not None:
            stmt = stmt.where(runs.c.flow == flow)
        if status is not None:
            stmt = stmt.where(runs.c.status == status)
        with self.db.transaction() as conn:
            rows = conn.execute(stmt).all()
        return [run_info(r) for r in rows]

    def oldest_live_run(self, *, flows: Collection[str] | None = None) -> RunInfo | None:
        """The live (pending, running, waiting) run created first, if any (of ``flows``).

        One ordered query per live status on its (status, created_at) index.
        """
        oldest: list[RunInfo] = []
        with self.db.transaction() as conn:
            for status in RUN_LIVE:
                stmt = sa.select(runs).where(runs.c.status == status)
                if flows is not None:
                    stmt = stmt.where(runs.c.flow.in_(list(flows)))
                row = conn.execute(
                    stmt.order_by(runs.c.created_at.asc(), runs.c.id.asc()).limit(1)
                ).first()
                if row is not None:
                    oldest.append(run_info(row))
        return min(oldest, key=lambda r: r.created_at, default=None)

    def count_runs(self, *, flow: str | None = None) -> dict[str, int]:
        """How many runs have each status."""
        stmt = sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
        if flow is not None:
            stmt = stmt.where(runs.c.flow == flow)
        with self.db.transaction() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(stmt).all()}

    def count_runs_by_flow(self) -> dict[str, dict[str, int]]:
        """Per flow that has runs, how many have each status (uncached, no zeros)."""
        stmt = sa.select(runs.c.flow, runs.c.status, sa.func.count()).group_by(
            runs.c.flow, runs.c.status
        )
        out: dict[str, dict[str, int]] = {}
        with self.db.transaction() as conn:
            for flow, status, n in conn.execute(stmt).all():
                out.setdefault(flow, {})[status] = int(n)
        return dict(sorted(out.items()))

    def get_steps(self, run_id: str) -> list[StepInfo]:
        """A run's timeline, in the order its steps were created."""
        stmt = (
            sa.select(steps)
            .where(steps.c.run_id == run_id)
            .order_by(steps.c.created_at, steps.c.item, steps.c.id)
        )
        with self.db.transaction() as conn:
            rows = conn.execute(stmt).all()
        return [step_info(r) for r in rows]

    def step_traces(self, run_id: str, names: list[str]) -> list[dict[str, str]]:
        """The trace contexts recorded by the run's steps called ``names`` (a join's parents)."""
        stmt = sa.select(steps.c.trace_context).where(
            steps.c.run_id == run_id,
            steps.c.name.in_(names),
            steps.c.trace_context.is_not(None),
        )
        with self.db.transaction() as conn:
            return [r[0] for r in conn.execute(stmt.order_by(steps.c.item)).all()]

    def get_attempts(self, run_id: str) -> list[AttemptInfo]:
        """The run's attempts that did not succeed (retried, failed, lost), oldest first.

        A step's last attempt is its :class:`~flowkit.StepInfo` too: a step
        that failed for good has its final attempt in both.
        """
        with self.db.transaction() as conn:
            return attempts_of(conn, run_id)

    def get_signals(self, run_id: str) -> list[ReceivedSignal]:
        """The signals the run received, in the order they came (payloads as stored)."""
        stmt = (
            sa.select(signals.c.name, signals.c.created_at, signals.c.payload)
            .where(signals.c.run_id == run_id)
            .order_by(signals.c.created_at, signals.c.id)
        )
        with self.db.transaction() as conn:
            rows = conn.execute(stmt).all()
        return [ReceivedSignal(r.name, aware(r.created_at), r.payload) for r in rows]

    def signal_waits(self, run_id: str) -> list[SignalWait]:
        """The run's ``waiting`` steps, with the deadline of a signal wait that has one."""
        stmt = (
            sa.select(steps.c.id, steps.c.name, steps.c.pending, steps.c.scheduled_at)
            .where(steps.c.run_id == run_id, steps.c.status == StepStatus.WAITING.value)
            .order_by(steps.c.created_at, steps.c.id)
        )
        with self.db.transaction() as conn:
            rows = conn.execute(stmt).all()
        return [SignalWait(r.id, r.name, r.pending, aware(r.scheduled_at)) for r in rows]

    def step_row(self, step_id: str) -> StepRow | None:
        """The state of one step, to decide about a message that did not claim it."""
        with self.db.transaction() as conn:
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
        return StepRow(r[0], r[1], r[2], r[3], aware(r[4]), r[5])


def run_info(r: Any) -> RunInfo:
    """A ``flowkit_runs`` row as a :class:`~flowkit.RunInfo`."""
    return RunInfo(**_record(RunInfo, r), status=RunStatus(r.status))


def step_info(r: Any) -> StepInfo:
    """A ``flowkit_steps`` row as a :class:`~flowkit.StepInfo`."""
    return StepInfo(**_record(StepInfo, r), status=StepStatus(r.status))


def _record(kind: Any, r: Any) -> dict[str, Any]:
    """A record's fields from the row's columns of the same names, timestamps made aware.

    The records declare only columns of their table, so one mapping serves both.
    """
    values = {f.name: getattr(r, f.name) for f in fields(kind) if f.name != "status"}
    for name in ("started_at", "finished_at"):
        values[name] = aware(values[name])
    values["created_at"] = aware(values["created_at"]) or utcnow()
    return values
