"""Run and step statuses: their meaning and transitions are in ``docs/runtime.md``."""

from __future__ import annotations

from enum import Enum

__all__ = ["RunStatus", "StepStatus"]


class RunStatus(str, Enum):
    """Where a run is in its life. The last four are terminal.

    .. versionadded:: 0.1
    """

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in _RUN_TERMINAL

    def __str__(self) -> str:
        return self.value


class StepStatus(str, Enum):
    """Where a step is in its life. The last four are terminal.

    .. versionadded:: 0.1
    """

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _STEP_TERMINAL

    def __str__(self) -> str:
        return self.value


_RUN_TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)
_STEP_TERMINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
