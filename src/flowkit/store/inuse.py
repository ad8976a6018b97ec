"""How much of each limit is in use now: running steps per queue and per key, rate starts.

What the queues page shows next to each declared limit. Each read is one
grouped query on an index (steps by ``(queue, status)`` and ``(limit_key,
status)``, the rate log by ``(key, at)``); nothing is locked, so a count is a
moment's view, not what a claim decides by (that is :mod:`.limits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa

from ..status import StepStatus
from .db import Database, utcnow
from .schema import rate_log, steps

__all__ = ["LimitsInUse"]

_RUNNING = StepStatus.RUNNING.value


def _scoped(column: sa.ColumnElement[str], scope: str) -> sa.ColumnElement[bool]:
    """The key ``scope`` itself, or one of its per-key keys (``scope:value``)."""
    return sa.or_(column == scope, column.startswith(f"{scope}:", autoescape=True))


class LimitsInUse:
    """Read-only counts behind the declared limits, over one :class:`~.db.Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def running_by_queue(self, queues: Sequence[str]) -> dict[str, int]:
        """Steps running now on each of ``queues`` (a queue concurrency limit's use)."""
        if not queues:
            return {}
        stmt = (
            sa.select(steps.c.queue, sa.func.count())
            .where(steps.c.queue.in_(list(queues)), steps.c.status == _RUNNING)
            .group_by(steps.c.queue)
        )
        with self.db.transaction() as conn:
            found = {r[0]: int(r[1]) for r in conn.execute(stmt).all()}
        return {q: found.get(q, 0) for q in queues}

    def running_by_key(self, scope: str) -> dict[str, int]:
        """Steps running now per concurrency key of ``scope`` (``flow.step``).

        The keys are as the claim holds them: ``scope`` for a step-wide limit,
        ``scope:value`` per key (``concurrency_key``).
        """
        stmt = (
            sa.select(steps.c.limit_key, sa.func.count())
            .where(_scoped(steps.c.limit_key, scope), steps.c.status == _RUNNING)
            .group_by(steps.c.limit_key)
        )
        with self.db.transaction() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(stmt).all()}

    def rate_starts(self, scope: str, window_ms: int) -> dict[str, int]:
        """Starts in the current window per rate key of ``scope``.

        ``scope`` is ``queue:NAME`` for a queue's rate, else ``flow.step``
        (``flow.step:value`` per ``rate_limit_key``).
        """
        since = utcnow() - timedelta(milliseconds=window_ms)
        stmt = (
            sa.select(rate_log.c.key, sa.func.count())
            .where(_scoped(rate_log.c.key, scope), rate_log.c.at > since)
            .group_by(rate_log.c.key)
        )
        with self.db.transaction() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(stmt).all()}
