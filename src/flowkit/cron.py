"""Cron expressions: parsed with periodiq's rules, checked when a flow is declared.

A flow's ``schedule=`` is checked by :func:`validate_cron` as the flow is
declared; ``flowkit scheduler`` (:mod:`flowkit.scheduling`) computes each tick
with :func:`next_tick`, in UTC.

.. versionadded:: 0.2
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .errors import ConfigurationError

__all__ = ["next_tick", "parse_cron", "validate_cron"]


def parse_cron(expr: str, *, what: str) -> Any:
    """Parse a five-field cron expression (or ``@daily``…) with periodiq.

    Raises:
        ConfigurationError: naming the flow and the expression.
    """
    try:
        from periodiq import cron
    except ImportError as exc:  # pragma: no cover - periodiq is a dependency
        raise ConfigurationError("schedules need periodiq: pip install periodiq") from exc
    try:
        spec = cron(expr)
        next_tick(spec, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except Exception as exc:
        raise ConfigurationError(
            f"{what}: schedule {expr!r} is not a cron expression like '*/5 * * * *' ({exc})"
        ) from None
    return spec


def validate_cron(expr: str, *, what: str) -> str:
    """Check a cron expression when its flow is declared, not at the first tick.

    Returns:
        ``expr``.

    Raises:
        ConfigurationError: as :func:`parse_cron`.
    """
    parse_cron(expr, what=what)
    return expr


def next_tick(spec: Any, after: datetime) -> datetime:
    """The first tick strictly after ``after`` (UTC, whole minutes)."""
    import pendulum

    moment = pendulum.instance(after.astimezone(timezone.utc)).in_timezone("UTC")
    n = spec.next_valid_date(moment)
    return datetime(n.year, n.month, n.day, n.hour, n.minute, tzinfo=timezone.utc)
