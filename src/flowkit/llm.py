"""LLM steps: call a chat model and get a validated pydantic object back.

Uses the official ``openai`` client (the ``llm`` extra), so any OpenAI-compatible
server works: set ``OPENAI_API_KEY`` and, for another server, ``OPENAI_BASE_URL``.
The model comes from the call, ``App(llm_model=...)`` or ``FLOWKIT_LLM_MODEL``.

Failure semantics inside a step:

* a 429 becomes :class:`~flowkit.RetryAfter` (the step is retried after the
  server's ``Retry-After``, or with the step's backoff);
* a 5xx, a timeout or a connection error becomes :class:`LLMUnavailable`,
  retried with the step's backoff;
* an answer that is not valid JSON for the schema is re-asked up to ``reasks``
  times in the same attempt (the validation error is quoted back), then
  :class:`LLMOutputError` fails the step without retries;
* other 4xx answers raise :class:`LLMRequestError`, which fails at once.

Tokens (and cost, with ``App(llm_prices=...)``) are recorded on the step and
shown by ``flowkit runs show``. With ``cache=True`` (the default) answers are
kept in the flowkit database keyed by (model, messages, schema), so re-running
a workflow does not pay twice.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigurationError, FlowkitError, PermanentError, RetryAfter

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "LLMError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMUnavailable",
    "complete",
    "structured",
]

T = TypeVar("T", bound=BaseModel)

_clients: dict[tuple[str | None, str], Any] = {}
_clients_lock = threading.Lock()
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


class LLMError(FlowkitError):
    """Base class of the errors of :mod:`flowkit.llm`."""


class LLMUnavailable(LLMError):
    """The model server failed (5xx, timeout, connection): the step is retried."""


class LLMRequestError(LLMError, PermanentError):
    """The server refused the request (4xx other than 429): retrying will not help."""


class LLMOutputError(LLMError, PermanentError):
    """The answers did not validate against the schema, even after re-asking."""


def _client(given: Any) -> Any:
    if given is not None:
        return given
    try:
        import openai
    except ImportError as exc:
        raise ConfigurationError(
            "flowkit.llm needs the openai package: pip install '.[llm]' from flowkit's source"
        ) from exc
    base = os.environ.get("OPENAI_BASE_URL") or None
    key = os.environ.get("OPENAI_API_KEY")
    if not key and not base:
        raise ConfigurationError(
            "flowkit.llm: set OPENAI_API_KEY (and OPENAI_BASE_URL for another "
            "OpenAI-compatible server)"
        )
    with _clients_lock:
        client = _clients.get((base, key or ""))
        if client is None:
            # Retries are flowkit's job (step retries with backoff), not the client's.
            client = openai.OpenAI(
                api_key=key or "not-needed", base_url=base, max_retries=0, timeout=120.0
            )
            _clients[(base, key or "")] = client
    return client


def _model(model: str | None, ctx: Context | None) -> str:
    chosen = model or (ctx.app.llm_model if ctx is not None and ctx.app else None)
    chosen = chosen or os.environ.get("FLOWKIT_LLM_MODEL")
    if not chosen:
        raise ConfigurationError(
            "flowkit.llm: no model; pass model=..., set App(llm_model=...) or FLOWKIT_LLM_MODEL"
        )
    return chosen


def _messages(messages: str | list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
    if system:
        msgs = [{"role": "system", "content": system}, *msgs]
    return msgs


def _cost(ctx: Context | None, model: str, prompt: int, completion: int) -> float | None:
    prices = ctx.app.llm_prices if ctx is not None and ctx.app else {}
    if model not in prices:
        return None
    p_in, p_out = prices[model]
    return (prompt * p_in + completion * p_out) / 1_000_000


def _call(
    client: Any, model: str, msgs: list[dict[str, str]], extra: dict[str, Any]
) -> tuple[str, int, int]:
    import openai

    try:
        resp = client.chat.completions.create(model=model, messages=msgs, **extra)
    except openai.RateLimitError as exc:
        after = exc.response.headers.get("retry-after") if exc.response is not None else None
        delay = float(after) if after and after.replace(".", "", 1).isdigit() else None
        raise RetryAfter(f"{model}: rate limited (429)", delay=delay) from None
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise LLMUnavailable(f"{model}: {type(exc).__name__}") from None
    except openai.APIStatusError as exc:
        if exc.status_code >= 500:
            raise LLMUnavailable(f"{model}: server error {exc.status_code}") from None
        raise LLMRequestError(f"{model}: request refused ({exc.status_code})") from None
    content = resp.choices[0].message.content or ""
    usage = resp.usage
    return content, (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0)


def _cache_key(model: str, msgs: list[dict[str, str]], extra: dict[str, Any]) -> str:
    blob = json.dumps({"model": model, "messages": msgs, **extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _ask(
    ctx: Context | None,
    client: Any,
    model: str,
    msgs: list[dict[str, str]],
    extra: dict[str, Any],
) -> str:
    content, prompt, completion = _call(client, model, msgs, extra)
    if ctx is not None:
        ctx.record_usage(
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=_cost(ctx, model, prompt, completion),
        )
    return content


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

    Parameters:
        schema: the pydantic model of the answer.
        messages: a user prompt, or chat messages (``[{"role": ..., "content": ...}]``).
        ctx: the step's context: records tokens and cost on the step and enables the cache.
        model: the model; default ``App(llm_model=...)`` or ``FLOWKIT_LLM_MODEL``.
        system: an extra system message.
        temperature, max_tokens: passed to the model.
        reasks: how many times an invalid answer is asked again in this attempt.
        cache: reuse a stored answer to the same (model, messages, schema).
        client: an ``openai.OpenAI`` client to use instead of the one from the environment.

    Returns:
        the validated ``schema`` instance.

    Raises:
        RetryAfter: rate limited (the step is retried).
        LLMUnavailable: server error, timeout or connection error (retried).
        LLMOutputError: no valid answer after ``reasks`` re-asks (not retried).
        LLMRequestError: the request was refused (not retried).
        ConfigurationError: no client configuration or no model.
    """
    chosen = _model(model, ctx)
    json_schema = schema.model_json_schema()
    instruction = (
        "Answer with one JSON object only, no prose, matching this JSON schema:\n"
        + json.dumps(json_schema)
    )
    msgs = _messages(messages, "\n\n".join(p for p in (system, instruction) if p))
    extra: dict[str, Any] = {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": json_schema, "strict": False},
        }
    }
    if temperature is not None:
        extra["temperature"] = temperature
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    store = ctx.app.store if cache and ctx is not None and ctx.app is not None else None
    key = _cache_key(chosen, msgs, extra)
    if store is not None:
        hit = store.cache_get(key)
        if hit is not None:
            assert ctx is not None
            ctx.record_usage(model=chosen, prompt_tokens=0, completion_tokens=0, cached=True)
            return schema.model_validate(hit[0])
    api = _client(client)
    convo = list(msgs)
    last = ""
    for _ in range(reasks + 1):
        content = _ask(ctx, api, chosen, convo, extra)
        text = _FENCE.sub(r"\1", content)
        try:
            value = schema.model_validate_json(text)
        except ValidationError as exc:
            last = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()[:10]
            )
            convo += [
                {"role": "assistant", "content": content},
                {
                    "role": "user",
                    "content": f"That answer is not valid for the schema: {last}. "
                    "Answer again with one JSON object that matches the schema.",
                },
            ]
            continue
        if store is not None:
            store.cache_put(
                key,
                model=chosen,
                response=value.model_dump(mode="json"),
                prompt_tokens=0,
                completion_tokens=0,
            )
        return value
    raise LLMOutputError(
        f"{chosen} gave no valid {schema.__name__} after {reasks + 1} answer(s): {last}"
    )


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
    """Ask a chat model for a plain text answer; same configuration, errors, usage and cache.

    Returns:
        the answer's text.
    """
    chosen = _model(model, ctx)
    msgs = _messages(messages, system)
    extra: dict[str, Any] = {}
    if temperature is not None:
        extra["temperature"] = temperature
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    store = ctx.app.store if cache and ctx is not None and ctx.app is not None else None
    key = _cache_key(chosen, msgs, {**extra, "kind": "text"})
    if store is not None:
        hit = store.cache_get(key)
        if hit is not None:
            assert ctx is not None
            ctx.record_usage(model=chosen, prompt_tokens=0, completion_tokens=0, cached=True)
            return str(hit[0])
    text = _ask(ctx, _client(client), chosen, msgs, extra)
    if store is not None:
        store.cache_put(key, model=chosen, response=text, prompt_tokens=0, completion_tokens=0)
    return text
