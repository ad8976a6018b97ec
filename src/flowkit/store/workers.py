"""Worker processes: who they are, their heartbeats, and the steps they hold.

Each worker (``App.start_worker``: a ``flowkit worker`` process, each child of
``--processes N``, or in-process threads) registers one ``flowkit_workers``
row, refreshes its ``heartbeat_at`` every few seconds
(:mod:`flowkit.runtime.heartbeat`) and marks it stopped when it stops cleanly.
A worker that was killed simply stops beating: :meth:`Workers.list` reports it
not ``alive`` once its last heartbeat is older than ``stale_after``. The claim
(:meth:`Runs.claim <flowkit.store.Runs.claim>`) writes the worker's id on the
step, so the steps a worker is running are a query away.

Nothing here changes a step: the recovery sweep (:mod:`.sweep`) reads these rows
to resume the running steps of a worker whose heartbeat stopped, and to tell a
lost message from a busy queue (``free_since``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .._ids import new_id
from ..records import RunningStep, WorkerInfo
from ..status import StepStatus
from .db import Database, aware, utcnow
from .schema import runs, steps, workers

__all__ = ["Workers"]


class Workers:
    """The ``flowkit_workers`` rows, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register(
        self, *, host: str, pid: int, queues: list[str] | None, threads: int, version: str
    ) -> str:
        """Record a starting worker; returns its new id (its first heartbeat is now).

        Parameters:
            host: the machine's host name.
            pid: the worker process's id.
            queues: the queues it serves, or ``None`` for every queue of its App.
            threads: its worker threads.
            version: the flowkit version it runs.

        Raises:
            StoreError: the database is unavailable.
        """
        worker_id, now = new_id(), utcnow()
        with self.db.transaction() as conn:
            conn.execute(
                workers.insert().values(
                    id=worker_id,
                    host=host[:255],
                    pid=pid,
                    queues=None if queues is None else sorted(queues),
                    threads=threads,
                    version=version[:32],
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        return worker_id

    def heartbeat(self, worker_id: str, *, free_since: datetime | None = None) -> None:
        """The worker is still running: move its ``heartbeat_at`` to now.

        Parameters:
            free_since: since when one of its threads has been free without a break
                (``None``: all are busy): the recovery sweep's evidence that its
                queues hold no ready message (see :mod:`.sweep`).

        Raises:
            StoreError: the database is unavailable (the next beat tries again).
        """
        with self.db.transaction() as conn:
            conn.execute(
                workers.update()
                .where(workers.c.id == worker_id)
                .values(heartbeat_at=utcnow(), free_since=free_since)
            )

    def stopped(self, worker_id: str) -> None:
        """The worker stopped cleanly: record when (its last heartbeat too).

        Raises:
            StoreError: the database is unavailable.
        """
        now = utcnow()
        with self.db.transaction() as conn:
            conn.execute(
                workers.update()
                .where(workers.c.id == worker_id, workers.c.stopped_at.is_(None))
                .values(stopped_at=now, heartbeat_at=now)
            )

    def list(self, *, gone_within: float = 3600.0, stale_after: float = 15.0) -> list[WorkerInfo]:
        """The workers that beat within ``gone_within`` seconds or never stopped, newest first.

        A worker that was killed never records its stop, so it stays listed (not
        ``alive``) until its row is deleted: that is how a crash shows.

        Parameters:
            gone_within: also list workers whose last heartbeat is this recent,
                stopped or not.
            stale_after: a worker not stopped whose last heartbeat is older
                than this is not ``alive``; three heartbeat intervals is a
                good value (a beat or two may be late under load).

        Returns:
            each worker with the steps it is running now.

        Raises:
            StoreError: the database is unavailable.
        """
        now = utcnow()
        recent = now - timedelta(seconds=gone_within)
        fresh = now - timedelta(seconds=stale_after)
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(workers)
                .where(sa.or_(workers.c.heartbeat_at >= recent, workers.c.stopped_at.is_(None)))
                .order_by(workers.c.started_at.desc(), workers.c.id.desc())
            ).all()
            held = _running(conn, [r.id for r in rows])
        out = []
        for r in rows:
            beat = aware(r.heartbeat_at) or now
            out.append(
                WorkerInfo(
                    id=r.id,
                    host=r.host,
                    pid=r.pid,
                    queues=None if r.queues is None else tuple(r.queues),
                    threads=r.threads,
                    version=r.version,
                    started_at=aware(r.started_at) or now,
                    heartbeat_at=beat,
                    stopped_at=aware(r.stopped_at),
                    alive=r.stopped_at is None and beat >= fresh,
                    running=tuple(held.get(r.id, ())),
                )
            )
        return out


def _running(conn: Any, worker_ids: Sequence[str]) -> dict[str, list[RunningStep]]:
    """The running steps held by each of ``worker_ids``, oldest start first."""
    if not worker_ids:
        return {}
    rows = conn.execute(
        sa.select(
            steps.c.worker_id,
            steps.c.id,
            steps.c.run_id,
            runs.c.flow,
            steps.c.name,
            steps.c.item,
            steps.c.started_at,
            steps.c.lease_until,
        )
        .join(runs, runs.c.id == steps.c.run_id)
        # On the (status, scheduled_at) index: running steps are few (one per thread).
        .where(steps.c.status == StepStatus.RUNNING.value, steps.c.worker_id.in_(worker_ids))
        .order_by(steps.c.started_at, steps.c.id)
    ).all()
    held: dict[str, list[RunningStep]] = {}
    for r in rows:
        held.setdefault(r.worker_id, []).append(
            RunningStep(
                step_id=r.id,
                run_id=r.run_id,
                flow=r.flow,
                name=r.name,
                item=r.item,
                started_at=aware(r.started_at),
                lease_until=aware(r.lease_until),
            )
        )
    return held
