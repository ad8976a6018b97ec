"""Stranded runs: live runs the deployed flow definition cannot go on with.

A run records the fingerprint of the definition it started under
(``flowkit_runs.fingerprint``). A worker that starts with another definition
reads the live runs whose fingerprint differs (:meth:`Strands.differing`), with
their open steps, and marks those it cannot go on with (:meth:`Strands.mark`,
``flowkit_runs.stranded``, the reason in words). A stranded run keeps its rows
as they are: the recovery sweep and the concurrency hand-off leave its steps
alone (:func:`~.overdue.due_select`) until ``flowkit retry --from`` moves it
onto the new definition (:meth:`~.control.Control.redrive`, which clears the mark).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .db import Database, aware
from .guards import RUN_LIVE, STEP_OPEN
from .schema import runs, steps

__all__ = ["LiveRun", "OpenStep", "StrandedRun", "Strands"]

#: Run ids per ``IN (…)`` list when reading their open steps.
_CHUNK = 500


@dataclass(frozen=True)
class OpenStep:
    """A step of a live run not done yet: queued, running or waiting."""

    id: str
    name: str
    status: str
    input: Any
    item: int | None = None


@dataclass(frozen=True)
class LiveRun:
    """A live run whose fingerprint differs from the deployed one, with its open steps."""

    id: str
    flow: str
    fingerprint: str | None
    status: str
    steps: list[OpenStep] = field(default_factory=list)


@dataclass(frozen=True)
class StrandedRun:
    """A row of ``flowkit runs list --stranded``."""

    id: str
    flow: str
    status: str
    reason: str
    fingerprint: str | None
    created_at: datetime | None


class Strands:
    """Reads and marks of stranded runs, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def differing(
        self, flow: str, fingerprint: str, *, after: str = "", limit: int = 500
    ) -> list[LiveRun]:
        """Live, unmarked runs of ``flow`` whose fingerprint is not ``fingerprint`` (or
        unknown), with their open steps: a page in id order, from after ``after``."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(runs.c.id, runs.c.fingerprint, runs.c.status)
                .where(
                    runs.c.flow == flow,
                    runs.c.status.in_(RUN_LIVE),
                    runs.c.stranded.is_(None),
                    sa.or_(runs.c.fingerprint.is_(None), runs.c.fingerprint != fingerprint),
                    runs.c.id > after,
                )
                .order_by(runs.c.id)
                .limit(limit)
            ).all()
            found = {r.id: LiveRun(r.id, flow, r.fingerprint, r.status) for r in rows}
            ids = list(found)
            for start in range(0, len(ids), _CHUNK):
                open_steps = conn.execute(
                    sa.select(
                        steps.c.run_id,
                        steps.c.id,
                        steps.c.name,
                        steps.c.status,
                        steps.c.input,
                        steps.c.item,
                    )
                    .where(
                        steps.c.run_id.in_(ids[start : start + _CHUNK]),
                        steps.c.status.in_(STEP_OPEN),
                    )
                    .order_by(steps.c.created_at)
                )
                for s in open_steps:
                    found[s.run_id].steps.append(OpenStep(s.id, s.name, s.status, s.input, s.item))
        return list(found.values())

    def mark(self, run_id: str, reason: str) -> bool:
        """Mark a live run stranded with ``reason``; ``False`` if it ended or was marked."""
        with self.db.transaction() as conn:
            done = conn.execute(
                runs.update()
                .where(
                    runs.c.id == run_id,
                    runs.c.status.in_(RUN_LIVE),
                    runs.c.stranded.is_(None),
                )
                .values(stranded=reason[:2000])
            )
            return bool(done.rowcount)

    def state(self, run_id: str) -> tuple[str | None, str | None] | None:
        """``(fingerprint, stranded reason)`` of a run; ``None`` if there is no such run."""
        with self.db.transaction() as conn:
            row = conn.execute(
                sa.select(runs.c.fingerprint, runs.c.stranded).where(runs.c.id == run_id)
            ).first()
        return None if row is None else (row.fingerprint, row.stranded)

    def count(self, flow: str) -> int:
        """How many runs of ``flow`` are stranded now."""
        with self.db.transaction() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(runs)
                    .where(runs.c.stranded.is_not(None), runs.c.flow == flow)
                ).scalar_one()
            )

    def stranded(self, flow: str | None = None, limit: int = 100) -> list[StrandedRun]:
        """The stranded runs (of ``flow``), oldest first."""
        query = sa.select(
            runs.c.id,
            runs.c.flow,
            runs.c.status,
            runs.c.stranded,
            runs.c.fingerprint,
            runs.c.created_at,
        ).where(runs.c.stranded.is_not(None))
        if flow is not None:
            query = query.where(runs.c.flow == flow)
        with self.db.transaction() as conn:
            rows = conn.execute(query.order_by(runs.c.created_at, runs.c.id).limit(limit)).all()
        return [
            StrandedRun(r.id, r.flow, r.status, r.stranded, r.fingerprint, aware(r.created_at))
            for r in rows
        ]
