"""Plain records of runs and steps, as read from the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .status import RunStatus, StepStatus

__all__ = ["AttemptInfo", "RetryPreview", "RunInfo", "RunningStep", "StepInfo", "WorkerInfo"]


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
    #: the worker (:attr:`WorkerInfo.id`) that holds, or last held, the step
    #:
    #: .. versionadded:: 0.2
    worker_id: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the last attempt's start to the finish, if both are known."""
        return _seconds(self.started_at, self.finished_at)


@dataclass(frozen=True)
class AttemptInfo:
    """An attempt of a step that did not succeed (``Store.get_attempts``, the run page).

    Only attempts that were retried, failed or lost (their worker died before
    recording an outcome) are logged; a step's last attempt is also its
    :class:`StepInfo` row.

    .. versionadded:: 0.3
    """

    step_id: str
    run_id: str
    #: its number, from 1 (the step row's ``attempts`` when it ran)
    attempt: int
    #: ``"retried"``, ``"failed"`` or ``"lost"``
    outcome: str
    worker_id: str | None
    started_at: datetime | None
    #: when it failed, or when its loss was noticed
    finished_at: datetime | None
    #: the recorded error (``type``, ``message``, ...); ``None`` for a lost attempt
    error: dict[str, Any] | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from its start to its end, if both are known."""
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
    #: ``error["type"]`` of a run that ended ``failed`` or ``timed_out``, else ``None``
    #:
    #: .. versionadded:: 0.2
    error_type: str | None = None
    #: the trace context of the run's submit (W3C ``traceparent``), when it was traced
    #:
    #: .. versionadded:: 0.3
    trace_context: dict[str, str] | None = field(default=None, repr=False)

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
    #: a stranded run's reason (``docs/deploys.md``); ``None`` for a finished run
    #:
    #: .. versionadded:: 0.4
    stranded: str | None = None
    #: a stranded run's open steps that its flow no longer has: removed by the retry
    #:
    #: .. versionadded:: 0.4
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunningStep:
    """A step a worker is running now (:attr:`WorkerInfo.running`).

    .. versionadded:: 0.2
    """

    step_id: str
    run_id: str
    #: the run's flow
    flow: str
    #: the step's name
    name: str
    #: the item's position for a fanned-out step, else ``None``
    item: int | None
    started_at: datetime | None
    #: past this, the step is presumed lost and may be run again elsewhere
    lease_until: datetime | None


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process as it registered itself, and what it runs (``flowkit status``).

    Each ``flowkit worker`` process (each child of ``--processes N``) and each
    in-process worker (``App.start_worker``) is one worker; it sends a
    heartbeat every few seconds while it runs.

    .. versionadded:: 0.2
    """

    id: str
    host: str
    pid: int
    #: the queues it serves, or ``None`` for all of its App's
    queues: tuple[str, ...] | None
    #: its worker threads
    threads: int
    #: the flowkit version it runs
    version: str
    started_at: datetime
    #: its last heartbeat
    heartbeat_at: datetime
    #: when it stopped cleanly, else ``None`` (running, or killed)
    stopped_at: datetime | None
    #: not stopped, and its last heartbeat is recent (see ``Workers.list(stale_after=)``)
    alive: bool
    #: the steps it is running now
    running: tuple[RunningStep, ...] = ()
