"""Hooks for watching the runtime: metrics, tracing, audit logs.

Subclass :class:`Observer` and override the hooks you need (each is a no-op
by default), then pass it to ``App(observers=[...])`` or
``app.observers.append(...)``. Hooks run in the worker thread that handles
the step, after the state change was committed; keep them fast and never
raise (exceptions are logged and dropped).

.. versionadded:: 0.1
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["Observer", "Observers"]

log = logging.getLogger("flowkit.observability")


class Observer:
    """No-op hooks called by the runtime (like Dramatiq's ``Middleware``)."""

    def step_started(self, *, flow: str, step: str, queue: str, attempt: int) -> None:
        """A worker claimed a step and is about to run its function."""

    def step_finished(
        self,
        *,
        flow: str,
        step: str,
        queue: str,
        outcome: str,
        seconds: float,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """An attempt ended: ``outcome`` is ``succeeded``, ``retried`` or ``failed``."""

    def step_delayed(self, *, flow: str, step: str, queue: str, seconds: float) -> None:
        """A step was put off by a rate or concurrency limit (not counted as a retry)."""

    def run_finished(self, *, flow: str, status: str) -> None:
        """A run reached a terminal status in this process."""


class Observers(list[Observer]):
    """The App's observers; calls every hook on each of them, never raising."""

    def emit(self, hook: str, **fields: Any) -> None:
        for observer in self:
            try:
                getattr(observer, hook)(**fields)
            except Exception:  # an observer must never break a step
                log.warning("observer %r failed in %s", observer, hook, exc_info=True)
