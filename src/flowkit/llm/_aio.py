"""The async calls, :func:`astructured` and :func:`acomplete`, on ``openai.AsyncOpenAI``.

They send what :func:`~flowkit.llm.structured` and :func:`~flowkit.llm.complete` send,
map the same failures and record the same usage; the answer cache (a database
read and write) runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .. import tracing
from . import _api, _cache, _config, _prompt, _transport

if TYPE_CHECKING:
    from ..context import Context

__all__ = ["acomplete", "astructured"]

T = TypeVar("T", bound=BaseModel)


async def _ask(
    ctx: Context | None,
    client: Any,
    model: str,
    msgs: list[dict[str, str]],
    extra: dict[str, Any],
) -> tuple[str, int, int, str | None]:
    attributes = _api.span_attributes(model)
    with tracing.span(f"flowkit.llm {model}", kind="client", attributes=attributes) as span:
        answer = await _transport.acall(client, model, msgs, extra)
        span.set("gen_ai.usage.input_tokens", answer[1])
        span.set("gen_ai.usage.output_tokens", answer[2])
    _api.record(ctx, model, answer)
    return answer


async def astructured(
    schema: type[T],
    messages: str | list[dict[str, str]],
    *,
    ctx: Context | None = None,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
    reasks: int = 2,
    cache: bool = True,
    client: Any = None,
) -> T:
    """:func:`~flowkit.llm.structured` for an ``async def`` step: awaits the model.

    The parameters, the answer's validation and re-asks, the cache and the errors
    are :func:`~flowkit.llm.structured`'s; ``client`` is an ``openai.AsyncOpenAI``
    (default: one built from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` for the
    running event loop).

    Raises:
        RetryAfter, LLMUnavailable, LLMOutputError, LLMRequestError, ConfigurationError:
            as :func:`~flowkit.llm.structured`.

    .. versionadded:: 0.4
    """
    if reasks < 0:
        raise ValueError("reasks must be >= 0")
    req = _api.structured_request(schema, messages, ctx, model, system, temperature, max_tokens)
    stored, found = await asyncio.to_thread(_cache.lookup, ctx, cache, req.key)
    if found and (hit := _api.cached(schema, stored, ctx, req.model)) is not None:
        return hit
    api = _config.async_client(client)
    convo = list(req.msgs)
    last = ""
    spent = (0, 0)
    for _ in range(reasks + 1):
        content, prompt, completion, problem = await _ask(ctx, api, req.model, convo, req.extra)
        spent = (spent[0] + prompt, spent[1] + completion)
        value, last = _api.validated(schema, content, problem)
        if value is None:
            convo += _prompt.reask(schema, content, last)
            continue
        dumped = value.model_dump(mode="json")
        await asyncio.to_thread(_cache.keep, ctx, cache, req.key, req.model, dumped, spent)
        return value
    raise _api.no_answer(req.model, schema, reasks, last)


async def acomplete(
    messages: str | list[dict[str, str]],
    *,
    ctx: Context | None = None,
    model: str | None = None,
    system: str | None = None,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
    cache: bool = True,
    client: Any = None,
) -> str:
    """:func:`~flowkit.llm.complete` for an ``async def`` step: awaits the model.

    The parameters, the cache and the errors are :func:`~flowkit.llm.complete`'s;
    ``client`` is an ``openai.AsyncOpenAI``.

    Raises:
        RetryAfter, LLMUnavailable, LLMRequestError, ConfigurationError:
            as :func:`~flowkit.llm.complete`.

    .. versionadded:: 0.4
    """
    req = _api.complete_request(messages, ctx, model, system, temperature, max_tokens)
    stored, found = await asyncio.to_thread(_cache.lookup, ctx, cache, req.key)
    if found and (hit := _api.cached_text(stored, ctx, req.model)) is not None:
        return hit
    api = _config.async_client(client)
    answer = await _ask(ctx, api, req.model, req.msgs, req.extra)
    text, prompt, completion, problem = answer
    if text and problem is None:  # a refusal or a cut-off answer is not kept
        tokens = (prompt, completion)
        await asyncio.to_thread(_cache.keep, ctx, cache, req.key, req.model, text, tokens)
    return text
