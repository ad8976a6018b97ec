"""The answer cache: reached through the step's ``ctx.llm_cache``, when it carries one."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..context import Context

#: The longest model name stored with a cached answer.
_MAX_MODEL = 200


def key_of(question: dict[str, Any]) -> str:
    """A stable hash of everything that decides the answer."""
    blob = json.dumps(
        question, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def lookup(ctx: Context | None, cache: bool, key: str) -> tuple[Any, bool]:
    """``(response, found)`` from the step's cache, when there is one to ask."""
    if not cache or ctx is None or ctx.llm_cache is None:
        return None, False
    hit = ctx.llm_cache.get(key)
    return (None, False) if hit is None else (hit[0], True)


def keep(
    ctx: Context | None, cache: bool, key: str, model: str, response: Any, tokens: tuple[int, int]
) -> None:
    """Store an answer and what it cost, when the step has a cache."""
    if cache and ctx is not None and ctx.llm_cache is not None:
        ctx.llm_cache.put(
            key,
            model=model[:_MAX_MODEL],
            response=response,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
        )
