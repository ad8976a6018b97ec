"""Rate and concurrency limits, checked inside the claim transaction.

Each limit key is locked for the rest of the transaction (``pg_advisory_xact_lock``
on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so two
workers can never both take the last slot. A claim refused by a concurrency limit
names the limit's key (``Delayed.slot``): the step then waits for that slot as a row
(:mod:`.handoff`), whose hand-off takes the same lock.
"""

from __future__ import annotations

import random
import zlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..status import StepStatus
from .db import utcnow
from .rows import ClaimLimits, Delayed
from .schema import rate_log, steps

__all__ = ["check", "lock_keys"]

_RUNNING = StepStatus.RUNNING.value


def lock_keys(conn: Connection, keys: set[str]) -> None:
    """Lock limit ``keys`` for the rest of the transaction, in order (no deadlock)."""
    if conn.dialect.name != "postgresql":
        return
    for key in sorted(keys):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key_id(key)})


def _key_id(key: str) -> int:
    # A stable signed 64-bit id for the advisory lock (crc32 twice, combined).
    raw = (zlib.crc32(key.encode()) << 32) | zlib.crc32(key[::-1].encode())
    return raw - (1 << 64) if raw >= 1 << 63 else raw


def check(conn: Connection, step_id: str, limits: ClaimLimits) -> tuple[Delayed | None, datetime]:
    """Lock the limits' keys; return a :class:`Delayed` if the step must wait, and the time.

    The time is read once the locks are held and the concurrency counts are
    taken, so the rate log is written in order, and the start time recorded for
    the step is never before the end of a step it waited for: a completion that
    freed the slot had committed, its end time taken, before the count saw it.
    """
    keys: set[str] = {f"rate:{k}" for k, _, _ in limits.rates}
    if limits.queue_concurrency:
        keys.add(f"queue:{limits.queue}")
    if limits.key_concurrency and limits.key:
        keys.add(f"conc:{limits.key}")
    lock_keys(conn, keys)
    if limits.queue_concurrency:
        running = conn.execute(
            sa.select(sa.func.count())
            .select_from(steps)
            .where(steps.c.queue == limits.queue, steps.c.status == _RUNNING, steps.c.id != step_id)
        ).scalar_one()
        if running >= limits.queue_concurrency:
            why = f"queue {limits.queue} runs {running} steps"
            return Delayed(_jitter(250), why, slot=f"queue:{limits.queue}"), utcnow()
    if limits.key_concurrency and limits.key:
        running = conn.execute(
            sa.select(sa.func.count())
            .select_from(steps)
            .where(
                steps.c.limit_key == limits.key, steps.c.status == _RUNNING, steps.c.id != step_id
            )
        ).scalar_one()
        if running >= limits.key_concurrency:
            why = f"{limits.key} runs {running} steps"
            return Delayed(_jitter(250), why, slot=f"conc:{limits.key}"), utcnow()
    now = utcnow()
    for key, limit, window_ms in limits.rates:
        since = now - timedelta(milliseconds=window_ms)
        conn.execute(sa.delete(rate_log).where(rate_log.c.key == key, rate_log.c.at <= since))
        starts = conn.execute(
            sa.select(rate_log.c.at)
            .where(rate_log.c.key == key, rate_log.c.at > since)
            .order_by(rate_log.c.at)
        ).all()
        if len(starts) >= limit:
            oldest = starts[len(starts) - limit][0]
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=now.tzinfo)
            wait = (oldest + timedelta(milliseconds=window_ms) - now).total_seconds() * 1000
            return Delayed(max(5, int(wait)) + random.randint(0, 20), f"rate {key}"), now
    for key, _, _ in limits.rates:
        conn.execute(rate_log.insert().values(key=key, at=now))
    return None, now


def _jitter(ms: int) -> int:
    return ms // 2 + random.randint(0, ms)
