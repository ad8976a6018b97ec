"""Named queues with defaults, and the rate and concurrency limits of steps.

Limits hold across every worker process: they are checked in the database,
in the same transaction that claims the step, under a lock per limit key
(an advisory lock on PostgreSQL; SQLite serialises writers anyway). A step
over a rate limit is put off and sent again later; one over a concurrency limit
waits until the step that frees a slot hands it over (``flowkit.store.handoff``).
Either way it is not failed and the wait does not count as a retry.

Accuracy: concurrency limits are exact (a step counts from its claim to the
end of its attempt; a step of a worker that died counts until RabbitMQ
redelivers it or its lease passes). Rate limits are exact over any sliding
window measured on the workers' clocks (a log of start times per key), so
workers on several machines need synchronised clocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, FlowDefinitionError
from .names import validate_queue_name

__all__ = ["Queue", "RateLimit", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(ms|s|m|h|d|sec|second|min|minute|hour|day)\s*$")
_UNITS = {
    "ms": 1,
    "s": 1000,
    "sec": 1000,
    "second": 1000,
    "m": 60_000,
    "min": 60_000,
    "minute": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
}


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` starts in any window of ``window_ms`` milliseconds."""

    limit: int
    window_ms: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_ms / 1000:g}s"


def parse_rate(value: str | RateLimit | None, *, what: str) -> RateLimit | None:
    """``"60/m"``, ``"10/s"``, ``"1000/h"``, ``"5/10s"`` → :class:`RateLimit`."""
    if value is None or isinstance(value, RateLimit):
        return value
    m = _RATE.match(str(value))
    if not m or int(m.group(1)) < 1:
        raise ConfigurationError(
            f"{what}: rate limit {value!r} is not like '10/s', '60/m' or '1000/h'"
        )
    count, mult, unit = m.groups()
    return RateLimit(int(count), int(mult or 1) * _UNITS[unit])


class Queue:
    """A named queue and the defaults of the steps routed to it.

    ::

        openai = flowkit.Queue("openai", rate_limit="60/m", concurrency=4)

        @flowkit.stage(queue=openai)
        def summarize(doc: Document) -> Summary: ...

    Start a worker for it alone with ``flowkit worker app:app --queues openai``.

    Parameters:
        name: the queue's name (letters, digits, ``_.-``; RabbitMQ-safe).
        concurrency: at most this many of its steps run at once, over all workers.
        rate_limit: at most this many of its steps start per window, over all
            workers (``"60/m"``).
        priority: the default priority of its steps (0 first .. 255).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate_limit: str | RateLimit | None = None,
        priority: int | None = None,
    ) -> None:
        self.name = validate_queue_name(name, what="flowkit.Queue")
        if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
            raise ConfigurationError(f"queue {name!r}: concurrency must be an integer >= 1")
        self.concurrency = concurrency
        self.rate_limit = parse_rate(rate_limit, what=f"queue {name!r}")
        if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 255):
            raise ConfigurationError(f"queue {name!r}: priority must be an integer in 0..255")
        self.priority = priority

    def __repr__(self) -> str:
        return f"<Queue {self.name} concurrency={self.concurrency} rate_limit={self.rate_limit}>"


KeyFn = Callable[[Any], Any]


@dataclass(frozen=True)
class StepLimits:
    """The limits a step's claim must respect (see :func:`limits_of`)."""

    queue: str
    queue_concurrency: int | None = None
    queue_rate: RateLimit | None = None
    concurrency: int | None = None
    concurrency_key: KeyFn | None = None
    rate: RateLimit | None = None
    rate_key: KeyFn | None = None

    @property
    def any(self) -> bool:
        return bool(self.queue_concurrency or self.queue_rate or self.concurrency or self.rate)


def check_key_fn(fn: Any, *, what: str) -> KeyFn | None:
    if fn is None:
        return None
    if not callable(fn):
        raise FlowDefinitionError(f"{what} must be a function of the step's input")
    return fn  # type: ignore[no-any-return]
