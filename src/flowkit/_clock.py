"""The one clock every due time is read from: the wall clock, unless a test moves it.

Due times on rows (a ``delay=``, a retry's backoff, a signal wait's timeout, a
run's deadline), claims, leases and timestamps all read :func:`utcnow`
(re-exported by ``store/db.py``, which owns the clock for the store). The
in-process ``memory://`` broker also asks the clock whether it keeps a delayed
message itself (:meth:`Clock.hold`) and tells it when a worker is done
with one (:meth:`Clock.handled`). The wall clock ignores both; the
:class:`~flowkit.testing.VirtualClock` of :mod:`flowkit.testing` runs ahead of
it and fires the timers it keeps when a test moves it forward.

One clock per process, because the store and the runtime read it from
everywhere without being handed it; only ``flowkit.testing.embedded`` installs
another, and it puts the wall clock back on exit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["DUE_OPTION", "Clock", "current", "install", "utcnow"]

#: The message option a timer message carries its row's due time in (epoch
#: milliseconds), so :meth:`Clock.hold` fires it by the row, not by when it was sent.
DUE_OPTION = "flowkit_due"


class Clock:
    """The wall clock, in UTC; the base of :class:`~flowkit.testing.VirtualClock`."""

    def now(self) -> datetime:
        """The current time: an aware UTC datetime."""
        return datetime.now(timezone.utc)

    def hold(
        self,
        delay_ms: int,
        fire: Callable[[], object],
        message_id: str,
        due: datetime | None = None,
    ) -> bool:
        """Keep a delayed memory-broker message and call ``fire`` once ``delay_ms`` have passed.

        ``due``, when the message carries it (:data:`DUE_OPTION`), is when its row
        says the timer fires, on this clock; it wins over ``delay_ms``.

        Returns whether the clock keeps it; the wall clock never does (the broker
        delays the message itself).
        """
        return False

    def handled(self, message_id: str) -> None:
        """A memory-broker worker finished with a message (processed or skipped)."""


_WALL = Clock()
_installed: list[Clock] = [_WALL]


def utcnow() -> datetime:
    """The current time on the process's clock: an aware UTC datetime."""
    return _installed[0].now()


def current() -> Clock:
    """The process's clock."""
    return _installed[0]


def install(clock: Clock | None) -> Clock:
    """Make ``clock`` the process's clock (``None``: the wall clock); returns the previous one."""
    previous, _installed[0] = _installed[0], clock or _WALL
    return previous
