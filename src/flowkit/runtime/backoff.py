"""Waiting out a broker outage: exponential backoff with jitter, said once each way.

A long-running process that needs RabbitMQ (``flowkit scheduler``) keeps
going while it is down: it tries again after ``$FLOWKIT_BROKER_RETRY_SECONDS``
(1 s), doubling up to :data:`RETRY_MAX` (30 s), each wait jittered so that
several processes do not knock in step. It logs one WARNING when the outage
starts (the masked URL and the cause, in words) and one INFO when it ends,
however many tries it took; the tries in between are silent.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable

from ..errors import BrokerError, ConfigurationError

__all__ = ["RETRY_MAX", "RETRY_SECONDS", "BrokerOutage", "retry_seconds"]

#: the first wait after RabbitMQ is found down (``$FLOWKIT_BROKER_RETRY_SECONDS``)
RETRY_SECONDS = 1.0
#: the longest wait between two tries
RETRY_MAX = 30.0


def retry_seconds() -> float:
    """The first wait of a backoff: ``$FLOWKIT_BROKER_RETRY_SECONDS`` or :data:`RETRY_SECONDS`.

    Raises:
        ConfigurationError: the variable is not a positive number of seconds.
    """
    raw = os.environ.get("FLOWKIT_BROKER_RETRY_SECONDS", "").strip()
    if not raw:
        return RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise ConfigurationError(
            f"FLOWKIT_BROKER_RETRY_SECONDS must be a positive number of seconds, not {raw!r}"
        )
    return value


class BrokerOutage:
    """The state of one process's view of a broker: up, or down since when, and the next try.

    Parameters:
        log: where the two lines of an outage go.
        what: how the lines name the broker (``"RabbitMQ at amqp://guest:***@host/"``).
        base: the first wait in seconds (default: :func:`retry_seconds`).
        cap: the longest wait.
        clock: monotonic seconds (a fake in tests).
        jitter: a number in [0, 1) per wait (a fake in tests).
    """

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        base: float | None = None,
        cap: float = RETRY_MAX,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.log = log
        self.what = what
        self.base = retry_seconds() if base is None else base
        self.cap = max(cap, self.base)
        self.clock = clock
        self.jitter = jitter
        #: when the outage began (``clock()``), or ``None`` while the broker answers
        self.since: float | None = None
        #: failed tries in this outage
        self.tries = 0
        self._next = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BrokerError) -> float:
        """A try failed with ``exc``: log it if the outage just began; returns the wait."""
        now = self.clock()
        if self.since is None:
            self.since, self.tries = now, 0
            self.log.warning(
                "%s; retrying with backoff (%gs doubling to %gs) until it is back",
                exc,
                self.base,
                self.cap,
            )
        self.tries += 1
        full = min(self.cap, self.base * 2.0 ** min(self.tries - 1, 32))
        wait = full / 2 + self.jitter() * full / 2  # "equal jitter": at least half the wait
        self._next = now + wait
        return wait

    def remaining(self) -> float:
        """Seconds until the next try (0 when it is due, or the broker is up)."""
        return 0.0 if self.since is None else max(0.0, self._next - self.clock())

    def recovered(self) -> None:
        """A try succeeded: log how long the outage lasted, once."""
        if self.since is None:
            return
        lasted = self.clock() - self.since
        self.log.info(
            "%s is reachable again after %.0f s (%d failed tries)", self.what, lasted, self.tries
        )
        self.since, self.tries = None, 0
