"""How an attempt ended, as data: its error record, its retry delay, its log text.

The worker path computes an outcome first and applies it after (see
:mod:`.execute`), so what is recorded and what is logged come from one place.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .. import redact
from .._secrets import dump_json_revealed
from ..errors import (
    InputValidationError,
    PayloadTooLarge,
    PermanentError,
    RetryAfter,
    WorkerLost,
)
from ..redact import exception_texts, validation_summary
from ..stage import Stage

__all__ = [
    "Failure",
    "Refused",
    "StepFailed",
    "backoff_ms",
    "error_record",
    "expected",
    "jsonable",
    "short",
]

_MAX_ERROR_MESSAGE = 4_000
_MAX_TRACEBACK = 16_000
_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class StepFailed(Exception):
    """Raised to Dramatiq after a step's final failure was recorded.

    It is in every flowkit actor's ``throws``, so Dramatiq does not retry it
    and dead-letters the message; the run's error lives in the database.
    """


class Refused(StepFailed):
    """Raised to Dramatiq for a message flowkit will not run (it names no stored step,
    or its arguments are not a step message's): dead-lettered with ``str(exc)`` as
    the reason, and no run changes."""


def error_record(exc: BaseException, *, step: str, attempt: int) -> dict[str, Any]:
    """The stored form of an error; redacted (no URL password, key or secret of the input)."""
    message, tb = exception_texts(exc, limit=30)
    return {
        "type": type(exc).__name__,
        "message": message[:_MAX_ERROR_MESSAGE],
        "traceback": tb[-_MAX_TRACEBACK:],
        "step": step,
        "attempt": attempt,
    }


def backoff_ms(stage: Stage[Any, Any], attempt: int) -> int:
    """Exponential backoff with jitter: ``min_backoff * 2**(attempt-1)``, capped, ±50 %."""
    base = min(stage.max_backoff_ms, stage.min_backoff_ms * 2 ** max(0, attempt - 1))
    return int(base / 2 + random.uniform(0, base / 2))


def expected(exc: BaseException) -> bool:
    """An expected refusal (bad data, a quarantine): logged without a traceback."""
    return isinstance(exc, (PermanentError, InputValidationError, ValidationError, WorkerLost))


def short(exc: BaseException) -> str:
    """One redacted line about ``exc`` for the log, at most 300 characters."""
    text = validation_summary(exc) if isinstance(exc, ValidationError) else redact.redact(str(exc))
    return text if len(text) <= 300 else text[:297] + "..."


def jsonable(value: Any) -> Any:
    """The JSON form of any value (a ``Stop``'s output), secrets with their real values,
    as a declared output stores them (:func:`~flowkit._secrets.dump_json_revealed`)."""
    return dump_json_revealed(_ANY, value)


@dataclass(frozen=True)
class Failure:
    """An attempt that raised: retried after ``delay_ms``, or final (``delay_ms`` is None)."""

    exc: BaseException
    delay_ms: int | None

    @classmethod
    def decide(cls, exc: BaseException, stage: Stage[Any, Any], attempt: int) -> Failure:
        """Retry unless the retries are spent or the error says not to.

        An output over the payload limits (:class:`~flowkit.PayloadTooLarge`) is final:
        it would not shrink on a retry.
        """
        final = (ValidationError, PermanentError, PayloadTooLarge)
        if attempt > stage.retries or isinstance(exc, final):
            return cls(exc, None)
        delay = backoff_ms(stage, attempt)
        if isinstance(exc, RetryAfter) and exc.delay_ms is not None:
            delay = exc.delay_ms
        return cls(exc, delay)
