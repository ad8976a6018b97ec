"""The dead-letter record: messages that could not run, kept with their reason.

RabbitMQ keeps dead-lettered messages for 7 days in ``<queue>.XQ``; flowkit
also records each one here, so the reason outlives RabbitMQ's TTL and
``flowkit dead list`` can show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .._ids import new_id
from .schema import dead_letters

if TYPE_CHECKING:
    from .repo import Store

__all__ = ["DeadLetter", "DeadLetters"]


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str | None
    actor: str | None
    message_id: str | None
    body: str | None
    reason: str
    run_id: str | None
    step_id: str | None
    created_at: datetime


class DeadLetters:
    """Record, list and remove dead letters."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self,
        *,
        reason: str,
        body: str | None,
        queue: str | None = None,
        actor: str | None = None,
        message_id: str | None = None,
        run_id: str | None = None,
        step_id: str | None = None,
    ) -> str:
        from .repo import utcnow

        letter_id = new_id()
        with self.store._tx() as conn:
            conn.execute(
                dead_letters.insert().values(
                    id=letter_id,
                    queue=queue,
                    actor=actor,
                    message_id=message_id,
                    body=body,
                    reason=reason[:4000],
                    run_id=run_id,
                    step_id=step_id,
                    created_at=utcnow(),
                )
            )
        return letter_id

    def newest(self, *, limit: int = 50) -> list[DeadLetter]:
        from .repo import _aware, utcnow

        with self.store._tx() as conn:
            rows = conn.execute(
                sa.select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
            ).all()
        return [
            DeadLetter(
                r.id,
                r.queue,
                r.actor,
                r.message_id,
                r.body,
                r.reason,
                r.run_id,
                r.step_id,
                _aware(r.created_at) or utcnow(),
            )
            for r in rows
        ]

    def get(self, letter_id: str) -> DeadLetter | None:
        found = [d for d in self.newest(limit=100_000) if d.id == letter_id]
        return found[0] if found else None

    def delete(self, ids: list[str] | None = None, *, older_than: float | None = None) -> int:
        from .repo import utcnow

        stmt: Any = sa.delete(dead_letters)
        if ids is not None:
            stmt = stmt.where(dead_letters.c.id.in_(ids))
        if older_than is not None:
            stmt = stmt.where(dead_letters.c.created_at < utcnow() - timedelta(seconds=older_than))
        with self.store._tx() as conn:
            return int(conn.execute(stmt).rowcount)
