"""The dead-letter record: messages that could not run, kept with their reason.

RabbitMQ keeps dead-lettered messages for 7 days in ``<queue>.XQ``; flowkit
also records each one here, so the reason outlives RabbitMQ's TTL and
``flowkit dead list`` can show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .._ids import new_id
from .db import Database, aware, utcnow
from .schema import dead_letters

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

    def __init__(self, db: Database) -> None:
        self.db = db

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
        letter_id = new_id()
        with self.db.transaction() as conn:
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
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
            ).all()
        return [_letter(r) for r in rows]

    def get(self, letter_id: str) -> DeadLetter | None:
        with self.db.transaction() as conn:
            row = conn.execute(
                sa.select(dead_letters).where(dead_letters.c.id == letter_id)
            ).first()
        return None if row is None else _letter(row)

    def delete(self, ids: list[str] | None = None, *, older_than: float | None = None) -> int:
        stmt: Any = sa.delete(dead_letters)
        if ids is not None:
            stmt = stmt.where(dead_letters.c.id.in_(ids))
        if older_than is not None:
            stmt = stmt.where(dead_letters.c.created_at < utcnow() - timedelta(seconds=older_than))
        with self.db.transaction() as conn:
            return int(conn.execute(stmt).rowcount)


def _letter(r: Any) -> DeadLetter:
    return DeadLetter(
        r.id,
        r.queue,
        r.actor,
        r.message_id,
        r.body,
        r.reason,
        r.run_id,
        r.step_id,
        aware(r.created_at) or utcnow(),
    )
