"""The public calls, :func:`structured` and :func:`complete`, built from the other parts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from .. import tracing
from ..errors import LLMOutputError
from . import _cache, _config, _prompt, _transport

if TYPE_CHECKING:
    from ..context import Context

__all__ = ["complete", "structured"]

T = TypeVar("T", bound=BaseModel)

log = logging.getLogger("flowkit.llm")


@dataclass(frozen=True)
class Request:
    """What one call sends: the model, the messages, the other options, its cache key."""

    model: str
    msgs: list[dict[str, str]]
    extra: dict[str, Any]
    key: str


def span_attributes(model: str) -> dict[str, str]:
    """The attributes of a request's ``flowkit.llm <model>`` span."""
    return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}


def record(ctx: Context | None, model: str, answer: tuple[str, int, int, str | None]) -> None:
    """Record an answer's tokens (and cost) on the step, if there is one."""
    _, prompt, completion, _ = answer
    if ctx is not None:
        ctx.record_usage(
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=_config.cost(ctx, model, prompt, completion),
        )


def _ask(
    ctx: Context | None,
    client: Any,
    model: str,
    msgs: list[dict[str, str]],
    extra: dict[str, Any],
) -> tuple[str, int, int, str | None]:
    """One request, in its own span; its tokens (and cost) are recorded on the step, if any."""
    attributes = span_attributes(model)
    with tracing.span(f"flowkit.llm {model}", kind="client", attributes=attributes) as span:
        answer = _transport.call(client, model, msgs, extra)
        span.set("gen_ai.usage.input_tokens", answer[1])
        span.set("gen_ai.usage.output_tokens", answer[2])
    record(ctx, model, answer)
    return answer


def structured_request(
    schema: type[BaseModel],
    messages: str | list[dict[str, str]],
    ctx: Context | None,
    model: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
) -> Request:
    """The request of :func:`structured` (also the async one's)."""
    chosen = _config.model(model, ctx)
    json_schema = schema.model_json_schema()
    instruction = _prompt.schema_instruction(json_schema)
    msgs = _prompt.messages(messages, "\n\n".join(p for p in (system, instruction) if p))
    extra = _prompt.request_options(temperature, max_tokens)
    extra["response_format"] = _prompt.response_format(schema, json_schema)
    key = _cache.key_of(
        {
            "kind": "structured",
            "model": chosen,
            "messages": msgs,
            "schema": json_schema,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
    )
    return Request(chosen, msgs, extra, key)


def complete_request(
    messages: str | list[dict[str, str]],
    ctx: Context | None,
    model: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
) -> Request:
    """The request of :func:`complete` (also the async one's)."""
    chosen = _config.model(model, ctx)
    msgs = _prompt.messages(messages, system)
    extra = _prompt.request_options(temperature, max_tokens)
    key = _cache.key_of(
        {
            "kind": "text",
            "model": chosen,
            "messages": msgs,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
    )
    return Request(chosen, msgs, extra, key)


def validated(schema: type[T], content: str, problem: str | None) -> tuple[T | None, str]:
    """``(answer, "")`` when ``content`` matches ``schema``, else ``(None, why not)``."""
    try:
        return schema.model_validate_json(_prompt.strip_fences(content)), ""
    except ValidationError as exc:
        return None, _prompt.explain(exc) + (f" ({problem})" if problem else "")


def no_answer(model: str, schema: type[BaseModel], reasks: int, last: str) -> LLMOutputError:
    """The error of a call whose answers never matched ``schema``."""
    return LLMOutputError(
        f"model {model!r} gave no answer matching schema {schema.__name__} in "
        f"{reasks + 1} tries ({reasks} re-ask(s)); last error: {last}",
        model=model,
        schema=schema.__name__,
        last_error=last,
    )


def cached_text(stored: Any, ctx: Context | None, model: str) -> str | None:
    """A cached text answer (its use recorded), or ``None``."""
    if not isinstance(stored, str):
        return None
    assert ctx is not None
    ctx.record_usage(model=model, prompt_tokens=0, completion_tokens=0, cached=True)
    return stored


def cached(schema: type[T], stored: Any, ctx: Context | None, model: str) -> T | None:
    """The cached answer, validated again; ``None`` if it no longer matches ``schema``."""
    try:
        value = schema.model_validate(stored)
    except ValidationError:
        log.warning("cached %s answer no longer validates; asking %s", schema.__name__, model)
        return None
    assert ctx is not None
    ctx.record_usage(model=model, prompt_tokens=0, completion_tokens=0, cached=True)
    return value


def structured(
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
    """Ask a chat model for an answer shaped like ``schema`` and return it validated.

    The request carries ``response_format={"type": "json_schema", ...}`` and,
    for servers that ignore it, an instruction with the JSON schema in the
    system message. The answer (``` fences stripped) is validated with
    ``schema.model_validate_json``; an invalid one is sent back with the
    validation error and asked again, at most ``reasks`` times.

    Inside a step, pass ``ctx``: the call's tokens (and cost, with
    ``App(llm_prices=...)``) are recorded on the step, and the answer is cached
    in the App's database. Without ``ctx`` (a script) nothing is recorded or cached.

    Parameters:
        schema: the pydantic model of the answer.
        messages: a user prompt, or chat messages (``[{"role": ..., "content": ...}]``).
        ctx: the step's :class:`~flowkit.Context`: records usage, enables the cache.
        model: the model; default ``App(llm_model=...)``, then ``$FLOWKIT_LLM_MODEL``.
        system: a system message (merged with the first message if that is one).
        temperature: sampling temperature; ``None`` sends none (for models that
            accept only their default).
        max_tokens: the longest answer, in tokens; ``None`` sends no limit.
        reasks: how many times an invalid answer is asked again within this attempt.
        cache: reuse the stored answer to the same (model, messages, schema,
            temperature, max_tokens); ``False`` always asks the model.
        client: an ``openai.OpenAI`` client to use instead of the one built from
            ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.

    Returns:
        the validated ``schema`` instance.

    Raises:
        RetryAfter: rate limited (HTTP 429); the step is retried after the
            server's ``Retry-After``, else with its backoff.
        LLMUnavailable: a 5xx, 408 or 409, a timeout or a connection error; the
            step is retried with its backoff.
        LLMOutputError: no valid answer after ``reasks`` re-asks; the step fails
            without retries.
        LLMRequestError: any other 4xx; the step fails without retries.
        ConfigurationError: the ``openai`` package, the server configuration or
            the model is missing.

    .. versionadded:: 0.1
    """
    if reasks < 0:
        raise ValueError("reasks must be >= 0")
    req = structured_request(schema, messages, ctx, model, system, temperature, max_tokens)
    chosen = req.model
    stored, found = _cache.lookup(ctx, cache, req.key)
    if found and (hit := cached(schema, stored, ctx, chosen)) is not None:
        return hit
    api = _config.client(client)
    convo = list(req.msgs)
    last = ""
    spent = (0, 0)
    for _ in range(reasks + 1):
        content, prompt, completion, problem = _ask(ctx, api, chosen, convo, req.extra)
        spent = (spent[0] + prompt, spent[1] + completion)
        value, last = validated(schema, content, problem)
        if value is None:
            convo += _prompt.reask(schema, content, last)
            continue
        _cache.keep(ctx, cache, req.key, chosen, value.model_dump(mode="json"), spent)
        return value
    raise no_answer(chosen, schema, reasks, last)


def complete(
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
    """Ask a chat model for a plain text answer.

    Configuration, error mapping, usage recording and caching are those of
    :func:`structured`.

    Parameters:
        messages: a user prompt, or chat messages (``[{"role": ..., "content": ...}]``).
        ctx: the step's :class:`~flowkit.Context`: records usage, enables the cache.
        model: the model; default ``App(llm_model=...)``, then ``$FLOWKIT_LLM_MODEL``.
        system: a system message (merged with the first message if that is one).
        temperature: sampling temperature; ``None`` sends none.
        max_tokens: the longest answer, in tokens; ``None`` sends no limit.
        cache: reuse the stored answer to the same (model, messages, temperature,
            max_tokens); ``False`` always asks the model.
        client: an ``openai.OpenAI`` client to use instead of the one built from
            ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.

    Returns:
        the answer's text.

    Raises:
        RetryAfter: rate limited (HTTP 429); the step is retried.
        LLMUnavailable: a 5xx, 408 or 409, a timeout or a connection error (retried).
        LLMRequestError: any other 4xx (not retried).
        ConfigurationError: the ``openai`` package, the server configuration or
            the model is missing.

    .. versionadded:: 0.1
    """
    req = complete_request(messages, ctx, model, system, temperature, max_tokens)
    stored, found = _cache.lookup(ctx, cache, req.key)
    if found and (hit := cached_text(stored, ctx, req.model)) is not None:
        return hit
    api = _config.client(client)
    text, prompt, completion, problem = _ask(ctx, api, req.model, req.msgs, req.extra)
    if text and problem is None:  # a refusal or a cut-off answer is not kept
        _cache.keep(ctx, cache, req.key, req.model, text, (prompt, completion))
    return text
