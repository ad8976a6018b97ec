"""The LLM response cache: responses of :mod:`flowkit.llm` steps, by request hash."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .db import Database, utcnow
from .schema import llm_cache

__all__ = ["LLMCache"]


class LLMCache:
    """Cached model responses over one :class:`~.db.Database` (see ``docs/llm.md``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> tuple[Any, int, int] | None:
        """``(response, prompt_tokens, completion_tokens)`` cached under ``key``."""
        with self.db.transaction() as conn:
            row = conn.execute(
                sa.select(
                    llm_cache.c.response, llm_cache.c.prompt_tokens, llm_cache.c.completion_tokens
                ).where(llm_cache.c.key == key)
            ).first()
        return None if row is None else (row[0], row[1], row[2])

    def put(
        self, key: str, *, model: str, response: Any, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Remember a response; a concurrent identical put is harmless."""
        try:
            with self.db.transaction() as conn:
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
