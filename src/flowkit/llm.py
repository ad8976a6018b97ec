"""LLM steps: call a chat model and get a validated pydantic object back.

Uses the official ``openai`` client (the ``llm`` extra), so any OpenAI-compatible
server works: set ``OPENAI_API_KEY`` and, for another server, ``OPENAI_BASE_URL``.
The model comes from the call, ``App(llm_model=...)`` or ``FLOWKIT_LLM_MODEL``.

Failure semantics inside a step:

* a 429 becomes :class:`~flowkit.RetryAfter` (the step is retried after the
  server's ``Retry-After``, or with the step's backoff);
* a 5xx (or 408/409), a timeout or a connection error becomes
  :class:`LLMUnavailable`, retried with the step's backoff;
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

import email.utils
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
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

log = logging.getLogger("flowkit.llm")

#: Seconds one HTTP request may take before it counts as :class:`LLMUnavailable`.
_TIMEOUT = 120.0
#: A longer ``Retry-After`` is capped: the step is retried then, and may wait again.
_MAX_RETRY_AFTER = 600.0
#: 4xx statuses worth another attempt (the openai client retries them too).
_RETRYABLE_4XX = frozenset({408, 409})
_MAX_DETAIL = 500

# One client per (base URL, hash of the key): clients are thread-safe and pool connections.
_clients: dict[tuple[str | None, str], Any] = {}
_clients_lock = threading.Lock()
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\s*```\s*$", re.S)
_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_-]{3})[A-Za-z0-9_-]{6,}")
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


class LLMError(FlowkitError):
    """Base class of the errors of :mod:`flowkit.llm`.

    .. versionadded:: 0.1
    """


class LLMUnavailable(LLMError):
    """The model server failed (5xx, 408, 409, timeout, connection error).

    A plain error, so the step is retried with its backoff.

    .. versionadded:: 0.1
    """


class LLMRequestError(LLMError, PermanentError):
    """The server refused the request (a 4xx other than 408, 409 and 429).

    A :class:`~flowkit.PermanentError`: retrying the same request will not help,
    so the step fails at once.

    .. versionadded:: 0.1
    """


class LLMOutputError(LLMError, PermanentError):
    """The model's answers did not validate against the schema, even after re-asking.

    A :class:`~flowkit.PermanentError`: the step fails at once, without retries.

    Attributes:
        model: the model that answered.
        schema: the name of the pydantic model the answer had to match.
        last_error: the validation error of the last answer.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        schema: str | None = None,
        last_error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.schema = schema
        self.last_error = last_error


# -- configuration ----------------------------------------------------------------
def _openai() -> Any:
    try:
        import openai
    except ImportError as exc:
        raise ConfigurationError(
            "flowkit.llm needs the openai package: install flowkit with the llm extra "
            "(pip install '.[llm]' from flowkit's source, or pip install 'openai>=1.30')"
        ) from exc
    return openai


def _client(given: Any) -> Any:
    if given is not None:
        return given
    openai = _openai()
    base = os.environ.get("OPENAI_BASE_URL") or None
    key = os.environ.get("OPENAI_API_KEY") or None
    if key is None and base is None:
        raise ConfigurationError(
            "flowkit.llm has no model server: set OPENAI_API_KEY (and OPENAI_BASE_URL "
            "for another OpenAI-compatible server), or pass client=..."
        )
    slot = (base, hashlib.sha256((key or "").encode()).hexdigest())
    with _clients_lock:
        client = _clients.get(slot)
        if client is None:
            # Retries are flowkit's job (durable step retries with backoff), not
            # the client's. A local server usually needs no key, but the client
            # insists on one.
            client = openai.OpenAI(
                api_key=key or "not-needed", base_url=base, max_retries=0, timeout=_TIMEOUT
            )
            _clients[slot] = client
    return client


def _model(model: str | None, ctx: Context | None) -> str:
    chosen = model or (ctx.app.llm_model if ctx is not None and ctx.app is not None else None)
    chosen = chosen or os.environ.get("FLOWKIT_LLM_MODEL")
    if not chosen:
        raise ConfigurationError(
            "flowkit.llm has no model: pass model=..., set App(llm_model=...) "
            "or the FLOWKIT_LLM_MODEL environment variable"
        )
    return chosen


def _messages(messages: str | list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    if isinstance(messages, str):
        msgs = [{"role": "user", "content": messages}]
    else:
        msgs = [dict(m) for m in messages]
    if not msgs:
        raise ValueError("flowkit.llm: no messages to send")
    if system:
        if msgs[0].get("role") == "system":
            # One system message: the caller's first, then ours.
            msgs[0]["content"] = f"{msgs[0].get('content', '')}\n\n{system}".strip()
        else:
            msgs.insert(0, {"role": "system", "content": system})
    return msgs


def _cost(ctx: Context | None, model: str, prompt: int, completion: int) -> float | None:
    prices = ctx.app.llm_prices if ctx is not None and ctx.app is not None else {}
    if model not in prices:
        return None
    p_in, p_out = prices[model]
    return (prompt * p_in + completion * p_out) / 1_000_000


# -- one HTTP call ------------------------------------------------------------------
def _redact(text: str, client: Any) -> str:
    key = getattr(client, "api_key", None)
    if isinstance(key, str) and len(key) >= 4:
        text = text.replace(key, "***")
    text = _SECRET.sub(r"\1***", text)
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _detail(exc: Any, client: Any) -> str:
    """The server's own error message, if any, without secrets."""
    body = getattr(exc, "body", None)
    err = body.get("error", body) if isinstance(body, dict) else body
    msg = err.get("message") if isinstance(err, dict) else err
    return _redact(str(msg), client) if isinstance(msg, str) and msg.strip() else ""


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``Retry-After-Ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    delay: float | None = None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                delay = email.utils.mktime_tz(parsed) - time.time()
        if delay is not None:
            break
    if delay is None or math.isnan(delay):
        return None
    return min(max(delay, 0.0), _MAX_RETRY_AFTER)


def _call(
    client: Any, model: str, msgs: list[dict[str, str]], extra: dict[str, Any]
) -> tuple[str, int, int, str | None]:
    """``(content, prompt_tokens, completion_tokens, problem)`` of one chat completion."""
    openai = _openai()
    try:
        resp = client.chat.completions.create(model=model, messages=msgs, **extra)
    except openai.RateLimitError as exc:
        delay = _retry_after(getattr(exc.response, "headers", None))
        detail = _detail(exc, client)
        raise RetryAfter(
            f"{model}: rate limited (HTTP 429)" + (f": {detail}" if detail else ""), delay=delay
        ) from None
    except openai.APITimeoutError:
        raise LLMUnavailable(f"{model}: the request timed out") from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__
        why = f" ({type(cause).__name__})" if cause is not None else ""
        raise LLMUnavailable(f"{model}: could not connect to the model server{why}") from None
    except openai.APIStatusError as exc:
        status = exc.status_code
        detail = _detail(exc, client)
        text = f"{model}: HTTP {status}" + (f": {detail}" if detail else "")
        if status >= 500 or status in _RETRYABLE_4XX:
            raise LLMUnavailable(f"{text} (server error)" if status >= 500 else text) from None
        raise LLMRequestError(f"{text} (request refused)") from None
    except openai.APIError as exc:  # e.g. a 200 whose body is not a chat completion
        raise LLMUnavailable(
            f"{model}: unusable response ({type(exc).__name__}): {_redact(str(exc), client)}"
        ) from None
    usage = getattr(resp, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    choices = getattr(resp, "choices", None) or []
    if not choices:
        return "", prompt, completion, "the response had no choices"
    choice = choices[0]
    message = choice.message
    content = message.content or ""
    problem = None
    refusal = getattr(message, "refusal", None)
    if not content and refusal:
        problem = f"the model refused: {refusal}"
    elif getattr(choice, "finish_reason", None) == "length":
        problem = "the answer was cut off at max_tokens"
    return content, prompt, completion, problem


def _ask(
    ctx: Context | None,
    client: Any,
    model: str,
    msgs: list[dict[str, str]],
    extra: dict[str, Any],
) -> tuple[str, int, int, str | None]:
    answer = _call(client, model, msgs, extra)
    if ctx is not None:
        _, prompt, completion, _ = answer
        ctx.record_usage(
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=_cost(ctx, model, prompt, completion),
        )
    return answer


# -- the cache ----------------------------------------------------------------------
def _cache_key(question: dict[str, Any]) -> str:
    blob = json.dumps(
        question, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_hit(ctx: Context | None, cache: bool, key: str) -> tuple[Any, bool]:
    """``(response, found)`` from the App's cache, when there is one to ask."""
    if not cache or ctx is None or ctx.app is None:
        return None, False
    hit = ctx.app.store.cache_get(key)
    return (None, False) if hit is None else (hit[0], True)


def _cache_put(
    ctx: Context | None, cache: bool, key: str, model: str, response: Any, tokens: tuple[int, int]
) -> None:
    if cache and ctx is not None and ctx.app is not None:
        ctx.app.store.cache_put(
            key,
            model=model[:200],
            response=response,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
        )


def _request_options(temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if temperature is not None:
        extra["temperature"] = temperature
    if max_tokens is not None:
        extra["max_tokens"] = max_tokens
    return extra


def _strip_fences(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text.strip()


def _explain(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:10]
    ]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# -- the public API -------------------------------------------------------------------
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
    chosen = _model(model, ctx)
    json_schema = schema.model_json_schema()
    instruction = (
        "Answer with one JSON object only, no prose and no code fences, "
        "matching this JSON schema:\n" + json.dumps(json_schema)
    )
    msgs = _messages(messages, "\n\n".join(p for p in (system, instruction) if p))
    extra = _request_options(temperature, max_tokens)
    extra["response_format"] = {
        "type": "json_schema",
        "json_schema": {
            "name": _SCHEMA_NAME.sub("_", schema.__name__)[:64] or "answer",
            "schema": json_schema,
            "strict": False,
        },
    }
    key = _cache_key(
        {
            "kind": "structured",
            "model": chosen,
            "messages": msgs,
            "schema": json_schema,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
    )
    stored, found = _cache_hit(ctx, cache, key)
    if found:
        try:
            value = schema.model_validate(stored)
        except ValidationError:
            log.warning("cached %s answer no longer validates; asking %s", schema.__name__, chosen)
        else:
            assert ctx is not None
            ctx.record_usage(model=chosen, prompt_tokens=0, completion_tokens=0, cached=True)
            return value
    api = _client(client)
    convo = list(msgs)
    last = ""
    spent = (0, 0)
    for _ in range(reasks + 1):
        content, prompt, completion, problem = _ask(ctx, api, chosen, convo, extra)
        spent = (spent[0] + prompt, spent[1] + completion)
        try:
            value = schema.model_validate_json(_strip_fences(content))
        except ValidationError as exc:
            last = _explain(exc) + (f" ({problem})" if problem else "")
            convo += [
                {"role": "assistant", "content": content},
                {
                    "role": "user",
                    "content": f"That answer is not valid for the {schema.__name__} schema: "
                    f"{last}. Answer again with one JSON object that matches the schema.",
                },
            ]
            continue
        _cache_put(ctx, cache, key, chosen, value.model_dump(mode="json"), spent)
        return value
    raise LLMOutputError(
        f"model {chosen!r} gave no answer matching schema {schema.__name__} in "
        f"{reasks + 1} tries ({reasks} re-ask(s)); last error: {last}",
        model=chosen,
        schema=schema.__name__,
        last_error=last,
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
    chosen = _model(model, ctx)
    msgs = _messages(messages, system)
    extra = _request_options(temperature, max_tokens)
    key = _cache_key(
        {
            "kind": "text",
            "model": chosen,
            "messages": msgs,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
    )
    stored, found = _cache_hit(ctx, cache, key)
    if found and isinstance(stored, str):
        assert ctx is not None
        ctx.record_usage(model=chosen, prompt_tokens=0, completion_tokens=0, cached=True)
        return stored
    text, prompt, completion, problem = _ask(ctx, _client(client), chosen, msgs, extra)
    if text and problem is None:  # a refusal or a cut-off answer is not kept
        _cache_put(ctx, cache, key, chosen, text, (prompt, completion))
    return text
