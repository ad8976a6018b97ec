"""The limits a step's claim must respect, keyed as the store counts them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..stage import Stage
from ..store import ClaimLimits

__all__ = ["claim_limits"]


def claim_limits(flow: str, stage: Stage[Any, Any], stored_input: Callable[[], Any]) -> ClaimLimits:
    """The rate and concurrency keys of one claim of ``stage`` in ``flow``.

    ``stored_input`` reads the step's stored input, only when a key function needs it.
    """
    lim = stage.limits
    value: Any = None
    if lim.concurrency_key or lim.rate_key:
        value = stage.parse_input(stored_input())
        if stage.wait_for:
            value = value[0]
    scope = f"{flow}.{stage.name}"
    key = None
    if lim.concurrency:
        key = f"{scope}:{lim.concurrency_key(value)}" if lim.concurrency_key else scope
    rates = []
    if lim.queue_rate:
        rates.append((f"queue:{lim.queue}", lim.queue_rate.limit, lim.queue_rate.window_ms))
    if lim.rate:
        rkey = f"{scope}:{lim.rate_key(value)}" if lim.rate_key else scope
        rates.append((rkey[:200], lim.rate.limit, lim.rate.window_ms))
    return ClaimLimits(
        queue=lim.queue,
        queue_concurrency=lim.queue_concurrency,
        key=key[:200] if key else None,
        key_concurrency=lim.concurrency,
        rates=tuple(rates),
    )
