"""One chat-completion request, and its failures mapped to flowkit's errors."""

from __future__ import annotations

import email.utils
import math
import re
import time
from typing import Any

from ..errors import LLMRequestError, LLMUnavailable, RetryAfter
from ._config import openai_module

#: A longer ``Retry-After`` is capped: the step is retried then, and may wait again.
MAX_RETRY_AFTER = 600.0
#: 4xx statuses worth another attempt (the openai client retries them too).
_RETRYABLE_4XX = frozenset({408, 409})
_MAX_DETAIL = 500
_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_-]{3})[A-Za-z0-9_-]{6,}")


def call(
    client: Any, model: str, msgs: list[dict[str, str]], extra: dict[str, Any]
) -> tuple[str, int, int, str | None]:
    """``(content, prompt_tokens, completion_tokens, problem)`` of one chat completion."""
    try:
        resp = client.chat.completions.create(model=model, messages=msgs, **extra)
    except Exception as exc:
        mapped = _mapped(exc, model, client)
        if mapped is None:
            raise
        raise mapped from None
    return _answer(resp)


async def acall(
    client: Any, model: str, msgs: list[dict[str, str]], extra: dict[str, Any]
) -> tuple[str, int, int, str | None]:
    """:func:`call` on an ``openai.AsyncOpenAI`` client."""
    try:
        resp = await client.chat.completions.create(model=model, messages=msgs, **extra)
    except Exception as exc:
        mapped = _mapped(exc, model, client)
        if mapped is None:
            raise
        raise mapped from None
    return _answer(resp)


def _mapped(exc: Exception, model: str, client: Any) -> Exception | None:
    """The flowkit error of a failed request, or ``None`` for an error not the client's."""
    openai = openai_module()
    if isinstance(exc, openai.RateLimitError):
        delay = retry_after(getattr(exc.response, "headers", None))
        detail = _detail(exc, client)
        return RetryAfter(
            f"{model}: rate limited (HTTP 429)" + (f": {detail}" if detail else ""), delay=delay
        )
    if isinstance(exc, openai.APITimeoutError):
        return LLMUnavailable(f"{model}: the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        why = f" ({type(cause).__name__})" if cause is not None else ""
        return LLMUnavailable(f"{model}: could not connect to the model server{why}")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _detail(exc, client)
        text = f"{model}: HTTP {status}" + (f": {detail}" if detail else "")
        if status >= 500 or status in _RETRYABLE_4XX:
            return LLMUnavailable(f"{text} (server error)" if status >= 500 else text)
        return LLMRequestError(f"{text} (request refused)")
    if isinstance(exc, openai.APIError):  # e.g. a 200 whose body is not a chat completion
        return LLMUnavailable(
            f"{model}: unusable response ({type(exc).__name__}): {_redact(str(exc), client)}"
        )
    return None


def _answer(resp: Any) -> tuple[str, int, int, str | None]:
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


def retry_after(headers: Any) -> float | None:
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
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


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
