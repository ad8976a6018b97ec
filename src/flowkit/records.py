"""Plain records of runs and steps, as read from the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .status import RunStatus, StepStatus

__all__ = ["RetryPreview", "RunInfo", "StepInfo"]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


@dataclass(frozen=True)
class StepInfo:
    """One row of a run's timeline (``Run.steps()``, ``flowkit runs show``).

    .. versionadded:: 0.1
    """

    id: str
    run_id: str
    name: str
    item: int | None
    status: StepStatus
    queue: str
    attempts: int
    # Payloads stay out of the repr: they may hold secrets (stored in the clear).
    input: Any = field(repr=False)
    output: Any = field(repr=False)
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: LLM usage of the step (``prompt_tokens``, ``completion_tokens``, ``cost``, ``calls``)
    usage: dict[str, Any] | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the last attempt's start to the finish, if both are known."""
        return _seconds(self.started_at, self.finished_at)


@dataclass(frozen=True)
class RunInfo:
    """A run as stored (``flowkit runs list``).

    .. versionadded:: 0.1
    """

    id: str
    flow: str
    key: str | None
    status: RunStatus
    input: Any = field(repr=False)
    output: Any = field(repr=False)
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: why a step ended the run early with :class:`~flowkit.Stop`, else ``None``
    stop_reason: str | None = None
    #: the RabbitMQ priority of the run's messages (``submit(priority=...)``)
    priority: int | None = None

    @property
    def stopped(self) -> bool:
        """Whether a step ended the run early with :class:`~flowkit.Stop`."""
        return self.stop_reason is not None

    @property
    def duration(self) -> float | None:
        """Seconds from submit to the finish, if finished."""
        return _seconds(self.created_at, self.finished_at)


@dataclass(frozen=True)
class RetryPreview:
    """What retrying a finished run would do (``Run.retry_preview``, ``flowkit retry --dry-run``).

    .. versionadded:: 0.2
    """

    run_id: str
    #: the step the retry starts from
    start: str
    #: the steps that run again, in flow order
    rerun: tuple[str, ...]
    #: the steps whose stored outputs are reused (not run again), in flow order
    reused: tuple[str, ...]
    #: succeeded items of a fanned-out start step that are kept, not run again
    kept_items: int = 0
