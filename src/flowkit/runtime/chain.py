"""Chained execution: a step's successor run by the same thread, with no broker hop.

When a step completes and its only successor may run in this worker process, the
completion statement also claims the successor (``running``, attempt 1, claimed
by the same message, this worker's lease) and the thread runs it at once: no
publish, no consume, one statement per step boundary. The message that started
the chain stays unacknowledged until the chain ends, so a worker killed
mid-chain has its message redelivered at once, and the redelivery releases the
chained step left ``running`` and publishes it (``StepRunner.not_claimed``).

A chain stops, and the successor is published as without chaining, at a fan-out,
a join, a signal wait, a child flow's step (it waits as a row), a delay, a step with
limits, a queue this process does not serve (a worker started with
``--queues``/``--stages``), a step of another
priority, a step declared ``chain=False``, an ``async def`` step (it gets its own
message and runs on the event loop: :mod:`.aio`), a worker told to stop, and after
``$FLOWKIT_CHAIN_STEPS`` steps (25) or ``$FLOWKIT_CHAIN_SECONDS`` (5) so that one run
cannot keep a thread. ``flowkit worker --no-chain`` turns it off for a worker.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..errors import ConfigurationError
from ..graph import FlowGraph
from ..stage import Stage
from ..store import ChainClaim, Outcome
from ..store.db import utcnow
from .shutdown import stopping

__all__ = ["DEFAULT_LEASE_MS", "Chain", "ChainLimits", "lease_ms"]

#: How long a running step without a timeout is presumed alive.
DEFAULT_LEASE_MS = 3_600_000
_LEASE_MARGIN_MS = 30_000


def lease_ms(stage: Stage[Any, Any]) -> int:
    """How long a claim of ``stage`` is presumed alive: its timeout and a margin, or an hour."""
    return (stage.timeout_ms + _LEASE_MARGIN_MS) if stage.timeout_ms else DEFAULT_LEASE_MS


@dataclass(frozen=True)
class ChainLimits:
    """How far one message's chain may go: ``steps`` steps, or ``seconds`` of running."""

    steps: int = 25
    seconds: float = 5.0

    @classmethod
    def from_env(cls) -> ChainLimits:
        """``$FLOWKIT_CHAIN_STEPS`` and ``$FLOWKIT_CHAIN_SECONDS``, else the defaults.

        Raises:
            ConfigurationError: a value that is not a positive number.
        """
        steps = os.environ.get("FLOWKIT_CHAIN_STEPS", "25")
        seconds = os.environ.get("FLOWKIT_CHAIN_SECONDS", "5")
        try:
            limits = cls(int(steps), float(seconds))
        except ValueError:
            limits = cls(0, 0.0)
        if limits.steps < 1 or limits.seconds <= 0:
            raise ConfigurationError(
                "FLOWKIT_CHAIN_STEPS must be an integer >= 1 and FLOWKIT_CHAIN_SECONDS a "
                f"number > 0 (got {steps!r} and {seconds!r})"
            )
        return limits


@dataclass
class Chain:
    """The steps one delivered message runs in its thread, and whether one more may follow.

    Parameters:
        limits: how far the chain may go.
        served: the queues this worker process consumes (empty: no chaining).
        worker_id: the worker recorded on the chained claims.
    """

    limits: ChainLimits
    served: frozenset[str]
    worker_id: str | None = None
    ran: int = 0
    began: float = field(default_factory=time.monotonic)

    def next_claim(
        self, flow: FlowGraph, stage: Stage[Any, Any], outcome: Outcome
    ) -> ChainClaim | None:
        """The claim of ``outcome``'s successor for this thread, or ``None`` to publish it."""
        self.ran += 1
        if not outcome.only_successor or not self._more():
            return None
        nxt = outcome.inserts[0]
        after = flow.steps[nxt.name]
        if (
            nxt.item is not None  # a fan-out's item
            or nxt.delay_ms
            or nxt.scheduled_at is not None
            or not after.chain
            or after.is_async
            or after.wait_for
            or after.child is not None  # a child flow's step waits as a row
            or after.limits.any
            or after.queue not in self.served
            or after.priority != stage.priority
        ):
            return None
        lease = utcnow() + timedelta(milliseconds=lease_ms(after))
        return ChainClaim(lease, self.worker_id)

    def _more(self) -> bool:
        if self.ran >= self.limits.steps or stopping():
            return False
        return time.monotonic() - self.began < self.limits.seconds
