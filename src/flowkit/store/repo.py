"""The queries the runtime and the CLI need, each a short transaction.

Every state change is a guarded UPDATE (``WHERE status IN (...)``), so a
duplicate message or a concurrent worker can never record a step twice: the
second UPDATE matches no row and its transaction does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from .._ids import new_id
from ..errors import StoreError
from ..records import RunInfo, StepInfo
from ..status import RunStatus, StepStatus
from . import fastpath
from .control import Control
from .deadletters import DeadLetters
from .engine import create_engine
from .gates import LIVE_RUN as _LIVE_RUN
from .gates import finish_run as _finish_run
from .gates import maybe_end as _maybe_end
from .gates import move_gate as _move_gate
from .gates import run_is_live as _run_is_live
from .gates import skip_live as _skip_live
from .gates import start_signal_wait as _start_signal_wait
from .limits import check as check_limits
from .rows import NO_STOP as _NO_STOP
from .rows import Claim, ClaimLimits, Delayed, DueStep, Gate, NewStep, RunEnd
from .schema import llm_cache, runs, steps

__all__ = ["Store"]

_LIVE_STEP = (StepStatus.QUEUED.value, StepStatus.RUNNING.value)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back naive; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


@dataclass
class _Created:
    run_id: str
    created: bool
    steps: list[NewStep] = field(default_factory=list)
    timers: list[NewStep] = field(default_factory=list)


class Store:
    """flowkit's database: runs and steps, on SQLite or PostgreSQL.

    Parameters:
        url: a SQLAlchemy URL (``sqlite:///flowkit.db``, ``postgresql://...``).
        pool_size: connections kept open; size it to the worker threads.
    """

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        # PostgreSQL runs the two per-step statements in one round trip each.
        self._fast = self.dialect == "postgresql"
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        if self._fast:
            # A claim lost in a database crash is harmless (the step is queued
            # again and the broker redelivers its message), so claims do not wait
            # for the WAL flush; completions and submits still do.
            self._claims = create_engine(url, pool_size=pool_size, durable=False).execution_options(
                isolation_level="AUTOCOMMIT"
            )

    @property
    def dead_letters(self) -> DeadLetters:
        """Messages that could not run, with their reason (see :mod:`.deadletters`)."""
        return DeadLetters(self)

    @property
    def control(self) -> Control:
        """Signals, waits, cancel, deadlines and redrive (see :mod:`.control`)."""
        return Control(self)

    def ensure_schema(self) -> None:
        """Create or upgrade the schema if needed (see :func:`migrate.ensure_schema`)."""
        from .migrate import ensure_schema

        ensure_schema(self.engine)

    def check_schema(self) -> None:
        """Fail clearly unless the schema is exactly this flowkit's."""
        from .migrate import check_schema

        check_schema(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._fast:
            self._claims.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            # The database is down or the connection broke: worth retrying later.
            # Anything else (a bug, bad data) propagates as it is.
            raise StoreError(f"database unavailable: {exc.orig!s}".strip()) from exc

    # -- submit ----------------------------------------------------------------
    def create_run(
        self,
        *,
        run_id: str,
        flow: str,
        key: str | None,
        input: Any,
        first: Sequence[NewStep],
        waiting: Sequence[NewStep] = (),
        deadline_ms: int | None = None,
        entry_waits: Sequence[Gate] = (),
        priority: int | None = None,
    ) -> _Created:
        """Insert a run and its first steps; with a known key, return the existing run.

        ``entry_waits`` are entry steps that wait for a signal: their deadlines
        start now, and the returned ``timers`` need wake-up messages.
        """
        now = utcnow()
        try:
            with self._tx() as conn:
                conn.execute(
                    runs.insert().values(
                        id=run_id,
                        flow=flow,
                        key=key,
                        status=RunStatus.PENDING.value,
                        input=input,
                        created_at=now,
                        priority=priority,
                        deadline_at=(
                            None
                            if deadline_ms is None
                            else now + timedelta(milliseconds=deadline_ms)
                        ),
                    )
                )
                self._insert_steps(conn, run_id, first, now)
                self._insert_steps(conn, run_id, waiting, now, status=StepStatus.WAITING)
                timers = []
                for gate in entry_waits:
                    (step,) = [w for w in waiting if w.name == gate.name]
                    timer = _start_signal_wait(conn, run_id, step.id, gate, now, step.queue)
                    if timer is not None:
                        timers.append(timer)
            return _Created(run_id, True, list(first), timers)
        except IntegrityError:
            if key is None:
                raise
            existing = self.find_run_by_key(flow, key)
            if existing is None:  # pragma: no cover - the conflicting run was deleted
                raise
            return _Created(existing, False)

    def find_run_by_key(self, flow: str, key: str) -> str | None:
        with self._tx() as conn:
            return conn.execute(
                sa.select(runs.c.id).where(runs.c.flow == flow, runs.c.key == key)
            ).scalar_one_or_none()

    @staticmethod
    def _insert_steps(
        conn: Connection,
        run_id: str,
        new: Sequence[NewStep],
        now: datetime,
        status: StepStatus = StepStatus.QUEUED,
    ) -> None:
        if not new:
            return
        conn.execute(
            steps.insert(),
            [
                {
                    "id": s.id,
                    "run_id": run_id,
                    "name": s.name,
                    "item": s.item,
                    "status": status.value,
                    "queue": s.queue,
                    "attempts": 0,
                    "input": s.input,
                    "created_at": now,
                    "scheduled_at": (
                        s.scheduled_at or now if status is StepStatus.QUEUED else s.scheduled_at
                    ),
                    "pending": s.pending,
                }
                for s in new
            ],
        )

    # -- the worker's hot path -------------------------------------------------
    def claim(
        self,
        step_id: str,
        message_id: str,
        *,
        lease_ms: int,
        starts_run: bool,
        limits: ClaimLimits | None = None,
        redelivered: bool = True,
    ) -> Claim | Delayed | None:
        """Mark a step running for this message; ``None`` if it is not ours to run.

        A ``queued`` step is claimed by whichever message comes first; a
        ``running`` step only by a redelivery of the message that claimed it
        (its worker died: the broker marks it ``redelivered``). Anything else is a
        duplicate, including a second copy of the same message published twice.
        """
        if self._fast and limits is None:
            now = utcnow()
            try:
                with self._claims.connect() as conn:
                    row = fastpath.claim(
                        conn,
                        step_id,
                        message_id,
                        lease_ms=lease_ms,
                        redelivered=redelivered,
                        now=now,
                        starts_run=starts_run,
                    )
            except (OperationalError, InterfaceError) as exc:
                raise StoreError(f"database unavailable: {exc.orig!s}".strip()) from exc
            if row is None:
                return None
            return Claim(row.run_id, row.name, row.attempts, row.input, row.item, row.usage)
        with self._tx() as conn:
            # Read the clock once the transaction holds its locks, so start times
            # (and the rate limits' log) are in the order the claims commit.
            now = utcnow()
            if limits is not None:
                delayed, now = check_limits(conn, step_id, limits)
                if delayed is not None:
                    # The row says when it is due, so the recovery sweep does
                    # not mistake a step waiting for its slot for a lost one.
                    conn.execute(
                        steps.update()
                        .where(steps.c.id == step_id, steps.c.status == StepStatus.QUEUED.value)
                        .values(scheduled_at=now + timedelta(milliseconds=delayed.ms))
                    )
                    return delayed
            row = fastpath.claim(
                conn,
                step_id,
                message_id,
                lease_ms=lease_ms,
                redelivered=redelivered,
                now=now,
                limit_key=limits.key if limits is not None else None,
            )
            if row is None:
                return None
            if starts_run:
                conn.execute(
                    runs.update()
                    .where(runs.c.id == row.run_id, runs.c.status == RunStatus.PENDING.value)
                    .values(status=RunStatus.RUNNING.value, started_at=now)
                )
        return Claim(
            run_id=row.run_id,
            name=row.name,
            attempts=row.attempts,
            input=row.input,
            item=row.item,
            usage=row.usage,
        )

    def step_input(self, step_id: str) -> Any:
        """A step's stored input (to compute its limit keys before claiming it)."""
        with self._tx() as conn:
            return conn.execute(sa.select(steps.c.input).where(steps.c.id == step_id)).scalar()

    def step_state(self, step_id: str) -> tuple[str, str | None, str, str] | None:
        """``(status, claimed_by, run_id, name)`` of a step, or ``None``."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(steps.c.status, steps.c.claimed_by, steps.c.run_id, steps.c.name).where(
                    steps.c.id == step_id
                )
            ).first()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def complete(
        self,
        *,
        step_id: str,
        message_id: str,
        run_id: str,
        output: Any,
        inserts: Sequence[NewStep] = (),
        gates: Sequence[Gate] = (),
        end: RunEnd | None = None,
        stop: Any = _NO_STOP,
        skipped: Sequence[str] = (),
        failed: dict[str, Any] | None = None,
        stop_reason: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> list[NewStep] | None:
        """Record a step's outcome and queue what follows, atomically.

        ``inserts`` are new queued steps, ``gates`` move join counters (a join
        reaching zero is queued with its gathered input), ``end`` finishes the
        run if no step is left, ``stop`` finishes it at once with that output
        (skipping what is left). ``failed`` records a settled item's error
        instead of an output.

        Returns the steps to publish, or ``None`` (and changes nothing) if
        the step was already finished or its run is over.
        """
        now = utcnow()
        simple = not (gates or end or skipped or failed) and stop is _NO_STOP
        sink = (
            end is not None
            and len(end.sinks) == 1
            and not end.sinks[0].each
            and not (gates or inserts or skipped or failed)
            and stop is _NO_STOP
        )
        if self._fast and sink and end is not None:
            # The run's only sink: record it and end the run in one statement.
            try:
                with self._autocommit.connect() as conn:
                    recorded, ended = fastpath.complete_and_end(
                        conn,
                        step_id=step_id,
                        message_id=message_id,
                        output=output,
                        usage=usage,
                        now=now,
                    )
            except (OperationalError, InterfaceError) as exc:
                raise StoreError(f"database unavailable: {exc.orig!s}".strip()) from exc
            if recorded:
                if not ended:
                    with self._tx() as conn:
                        _maybe_end(conn, run_id, end, now)
                return []
            with self._tx() as conn:
                _cancel_if_run_over(conn, step_id, now)
            return None
        if self._fast and simple and len(inserts) == 1:
            try:
                with self._autocommit.connect() as conn:
                    if fastpath.complete_with_successor(
                        conn,
                        step_id=step_id,
                        message_id=message_id,
                        run_id=run_id,
                        output=output,
                        usage=usage,
                        successor=inserts[0],
                        now=now,
                    ):
                        return [*inserts]
            except (OperationalError, InterfaceError) as exc:
                raise StoreError(f"database unavailable: {exc.orig!s}".strip()) from exc
            with self._tx() as conn:
                _cancel_if_run_over(conn, step_id, now)
            return None
        with self._tx() as conn:
            done = conn.execute(
                steps.update()
                .where(steps.c.id == step_id, steps.c.status.in_(_LIVE_STEP), _run_is_live(now))
                .values(
                    status=(StepStatus.FAILED if failed else StepStatus.SUCCEEDED).value,
                    output=output,
                    error=failed,
                    claimed_by=message_id,
                    finished_at=now,
                    lease_until=None,
                    usage=usage,
                )
            )
            if done.rowcount != 1:
                _cancel_if_run_over(conn, step_id, now)
                return None
            self._insert_steps(conn, run_id, inserts, now)
            ready = [*inserts]
            for gate in gates:
                opened = _move_gate(conn, run_id, gate, now)
                if opened is not None:
                    ready.append(opened)
            if skipped:
                self._insert_skipped(conn, run_id, skipped, now)
            if stop is not _NO_STOP:
                _skip_live(conn, run_id, now)
                _finish_run(
                    conn,
                    run_id,
                    RunStatus.SUCCEEDED,
                    now,
                    output=stop,
                    stop_reason=(stop_reason or "stopped")[:500],
                )
            elif end is not None and not ready:
                _maybe_end(conn, run_id, end, now)
        return ready

    @staticmethod
    def _insert_skipped(conn: Connection, run_id: str, names: Sequence[str], now: datetime) -> None:
        conn.execute(
            steps.insert(),
            [
                {
                    "id": new_id(),
                    "run_id": run_id,
                    "name": name,
                    "status": StepStatus.SKIPPED.value,
                    "queue": "",
                    "attempts": 0,
                    # Distinct times keep the timeline in flow order.
                    "created_at": now + timedelta(microseconds=i + 1),
                    "finished_at": now,
                }
                for i, name in enumerate(names)
            ],
        )

    def schedule_retry(
        self,
        step_id: str,
        error: dict[str, Any],
        due: datetime,
        usage: dict[str, Any] | None = None,
    ) -> bool:
        """Put a failed attempt back to ``queued`` with its error, due at ``due``."""
        with self._tx() as conn:
            res = conn.execute(
                steps.update()
                .where(steps.c.id == step_id, steps.c.status.in_(_LIVE_STEP))
                .values(
                    status=StepStatus.QUEUED.value,
                    error=error,
                    scheduled_at=due,
                    lease_until=None,
                    usage=usage,
                )
            )
        return res.rowcount == 1

    def fail(
        self,
        step_id: str,
        run_id: str,
        error: dict[str, Any],
        usage: dict[str, Any] | None = None,
    ) -> bool:
        """Mark a step and its run ``failed`` with the error, atomically."""
        now = utcnow()
        with self._tx() as conn:
            res = conn.execute(
                steps.update()
                .where(steps.c.id == step_id, steps.c.status.in_(_LIVE_STEP))
                .values(
                    status=StepStatus.FAILED.value,
                    error=error,
                    finished_at=now,
                    lease_until=None,
                    usage=usage,
                )
            )
            if res.rowcount != 1:
                conn.rollback()
                return False
            _skip_live(conn, run_id, now)
            _finish_run(conn, run_id, RunStatus.FAILED, now, error=error)
        return True

    def queued_steps(self, run_id: str, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """``(id, name, queue)`` of the run's still-queued steps among ``names``."""
        if not names:
            return []
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(steps.c.id, steps.c.name, steps.c.queue).where(
                    steps.c.run_id == run_id,
                    steps.c.name.in_(list(names)),
                    steps.c.status == StepStatus.QUEUED.value,
                )
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- recovery --------------------------------------------------------------
    def due_steps(
        self, *, older_than: float, limit: int = 1000, all_running: bool = False
    ) -> list[DueStep]:
        """Queued steps due for ``older_than`` seconds, and running steps past their lease.

        ``all_running`` treats every running step as abandoned: right for an
        embedded (in-process) broker starting up, when no other process can be
        running them.
        """
        now = utcnow()
        cutoff = now - timedelta(seconds=older_than)
        lease_cutoff = datetime.max.replace(tzinfo=timezone.utc) if all_running else now
        stmt = (
            sa.select(
                steps.c.id,
                steps.c.run_id,
                steps.c.name,
                steps.c.queue,
                steps.c.status,
                runs.c.flow,
                runs.c.key,
                runs.c.priority,
            )
            .join(runs, runs.c.id == steps.c.run_id)
            .where(
                runs.c.status.in_(_LIVE_RUN),
                sa.or_(
                    sa.and_(
                        # queued and due; or waiting for a signal past its deadline
                        steps.c.status.in_((StepStatus.QUEUED.value, StepStatus.WAITING.value)),
                        steps.c.scheduled_at <= cutoff,
                    ),
                    sa.and_(
                        steps.c.status == StepStatus.RUNNING.value,
                        steps.c.lease_until < lease_cutoff,
                    ),
                ),
            )
            .order_by(steps.c.scheduled_at)
            .limit(limit)
        )
        with self._tx() as conn:
            rows = conn.execute(stmt).all()
            expired = [r.id for r in rows if r.status == StepStatus.RUNNING.value]
            if expired:
                # A running step past its lease goes back to queued so a new
                # message may claim it; the guarded claim keeps copies harmless.
                conn.execute(
                    steps.update()
                    .where(
                        steps.c.id.in_(expired),
                        steps.c.status == StepStatus.RUNNING.value,
                        steps.c.lease_until < lease_cutoff,
                    )
                    .values(status=StepStatus.QUEUED.value, lease_until=None)
                )
        return [
            DueStep(
                r.id,
                r.run_id,
                r.name,
                r.queue,
                r.flow,
                r.key,
                "waiting" if r.status == StepStatus.WAITING.value else "queued",
                r.priority,
            )
            for r in rows
        ]

    # -- the LLM response cache --------------------------------------------------
    def cache_get(self, key: str) -> tuple[Any, int, int] | None:
        """``(response, prompt_tokens, completion_tokens)`` cached under ``key``."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(
                    llm_cache.c.response, llm_cache.c.prompt_tokens, llm_cache.c.completion_tokens
                ).where(llm_cache.c.key == key)
            ).first()
        return None if row is None else (row[0], row[1], row[2])

    def cache_put(
        self, key: str, *, model: str, response: Any, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Remember a response; a concurrent identical put is harmless."""
        try:
            with self._tx() as conn:
                conn.execute(
                    llm_cache.insert().values(
                        key=key,
                        model=model,
                        response=response,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        created_at=utcnow(),
                    )
                )
        except IntegrityError:
            pass

    # -- reading ---------------------------------------------------------------
    def get_run(self, run_id: str) -> RunInfo | None:
        with self._tx() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else _run_info(row)

    def run_state(self, run_id: str) -> tuple[str, Any, Any, str | None] | None:
        """``(status, output, error, stop_reason)``: the cheap read ``Run.result()`` polls."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(runs.c.status, runs.c.output, runs.c.error, runs.c.stop_reason).where(
                    runs.c.id == run_id
                )
            ).first()
        return None if row is None else (row[0], row[1], row[2], row[3])

    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[RunInfo]:
        stmt = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if flow is not None:
            stmt = stmt.where(runs.c.flow == flow)
        if status is not None:
            stmt = stmt.where(runs.c.status == status)
        with self._tx() as conn:
            rows = conn.execute(stmt).all()
        return [_run_info(r) for r in rows]

    def oldest_live_run(self) -> RunInfo | None:
        """The live (pending, running, waiting) run created first, if any.

        One ordered query per live status on its (status, created_at) index.
        """
        oldest: list[RunInfo] = []
        with self._tx() as conn:
            for status in _LIVE_RUN:
                row = conn.execute(
                    sa.select(runs)
                    .where(runs.c.status == status)
                    .order_by(runs.c.created_at.asc(), runs.c.id.asc())
                    .limit(1)
                ).first()
                if row is not None:
                    oldest.append(_run_info(row))
        return min(oldest, key=lambda r: r.created_at, default=None)

    def count_runs(self, *, flow: str | None = None) -> dict[str, int]:
        stmt = sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
        if flow is not None:
            stmt = stmt.where(runs.c.flow == flow)
        with self._tx() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(stmt).all()}

    def get_steps(self, run_id: str) -> list[StepInfo]:
        stmt = (
            sa.select(steps)
            .where(steps.c.run_id == run_id)
            .order_by(steps.c.created_at, steps.c.item, steps.c.id)
        )
        with self._tx() as conn:
            rows = conn.execute(stmt).all()
        return [
            StepInfo(
                id=r.id,
                run_id=r.run_id,
                name=r.name,
                item=r.item,
                status=StepStatus(r.status),
                queue=r.queue,
                attempts=r.attempts,
                input=r.input,
                output=r.output,
                error=r.error,
                created_at=_aware(r.created_at) or utcnow(),
                started_at=_aware(r.started_at),
                finished_at=_aware(r.finished_at),
                usage=r.usage,
            )
            for r in rows
        ]


def _run_info(r: Any) -> RunInfo:
    return RunInfo(
        id=r.id,
        flow=r.flow,
        key=r.key,
        status=RunStatus(r.status),
        input=r.input,
        output=r.output,
        error=r.error,
        created_at=_aware(r.created_at) or utcnow(),
        started_at=_aware(r.started_at),
        finished_at=_aware(r.finished_at),
        stop_reason=r.stop_reason,
    )


def _cancel_if_run_over(conn: Connection, step_id: str, now: datetime) -> None:
    """A step finishing after its run ended (cancelled, timed out) is recorded cancelled."""
    conn.execute(
        steps.update()
        .where(
            steps.c.id == step_id,
            steps.c.status.in_(_LIVE_STEP),
            ~_run_is_live(now),
        )
        .values(status=StepStatus.CANCELLED.value, finished_at=now, lease_until=None)
    )
