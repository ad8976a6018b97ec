"""Plain records exchanged between the runtime and the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..status import StepStatus

__all__ = [
    "NO_STOP",
    "ChainClaim",
    "Claim",
    "ClaimLimits",
    "Delayed",
    "DueStep",
    "Gate",
    "Handoff",
    "NewStep",
    "Outcome",
    "ReceivedSignal",
    "RunEnd",
    "SignalWait",
    "Source",
    "StepRow",
]

#: ``Store.complete(stop=...)`` default: the step did not stop its run.
NO_STOP: Any = object()


@dataclass(frozen=True)
class NewStep:
    """A step row to insert as ``queued``."""

    id: str
    name: str
    queue: str
    input: Any
    item: int | None = None
    scheduled_at: datetime | None = None
    #: for a join created ``waiting``: how many completions it waits for
    pending: int | None = None
    #: publish the message this much later (a timer); the row's time decides
    delay_ms: int | None = None


@dataclass(frozen=True)
class Source:
    """A parent whose output feeds a join (or a sink whose output feeds the run's result)."""

    name: str
    each: bool
    settles: bool = False


@dataclass(frozen=True)
class Gate:
    """Move a waiting join's counter by ``delta``; at zero it is queued with its input."""

    name: str
    delta: int
    sources: tuple[Source, ...]
    multi: bool
    #: the signal the step also waits for, and how long (ms) once its parents are done
    signal: str | None = None
    signal_timeout_ms: int | None = None


@dataclass(frozen=True)
class RunEnd:
    """The completed step may be the last one: finish the run if nothing is left."""

    sinks: tuple[Source, ...]


@dataclass(frozen=True)
class Outcome:
    """A step's outcome and what follows it, for ``Runs.complete``.

    ``inserts`` are new queued steps, ``gates`` move join counters (a join
    reaching zero is queued with its gathered input), ``end`` finishes the run
    if no step is left, ``stop`` finishes it at once with that output (skipping
    what is left, and recording ``skipped`` as never created). ``failed``
    records a settled item's error instead of an output.
    """

    output: Any = None
    inserts: Sequence[NewStep] = ()
    gates: Sequence[Gate] = ()
    end: RunEnd | None = None
    stop: Any = NO_STOP
    stop_reason: str | None = None
    skipped: Sequence[str] = ()
    failed: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    #: the trace context of the attempt, kept on the step row (a join's span links to it)
    trace: dict[str, str] | None = None
    #: claim the only successor in the same statement: this thread runs it next
    chain: ChainClaim | None = None

    @property
    def only_successor(self) -> bool:
        """One successor and nothing else: the one-statement path."""
        return len(self.inserts) == 1 and not self._extra and self.end is None

    @property
    def only_sink(self) -> bool:
        """The run's only (not fanned-out) sink: record it and end the run in one statement."""
        end = self.end
        return (
            end is not None
            and len(end.sinks) == 1
            and not end.sinks[0].each
            and not (self.inserts or self._extra)
        )

    @property
    def _extra(self) -> bool:
        return bool(self.gates or self.skipped or self.failed) or self.stop is not NO_STOP


@dataclass(frozen=True)
class ChainClaim:
    """Insert a completion's only successor already ``running`` (a chained step).

    It is claimed by the same message id as the step that completes, with the
    lease its own timeout gives, for the worker that runs it next in the same thread.
    """

    lease_until: datetime
    worker_id: str | None = None


@dataclass(frozen=True)
class StepRow:
    """What the runtime needs to decide about a message that could not claim its step."""

    status: str
    claimed_by: str | None
    run_id: str
    name: str
    scheduled_at: datetime | None
    pending: int | None


@dataclass(frozen=True)
class Claim:
    """What a worker learns when it claims a step."""

    run_id: str
    name: str
    attempts: int
    input: Any
    item: int | None = None
    #: LLM usage recorded by the step's earlier attempts (added up across retries)
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class DueStep:
    """A step the recovery sweep re-publishes."""

    id: str
    run_id: str
    name: str
    queue: str
    flow: str
    key: str | None
    #: what the sweep found: ``"queued"``, ``"running"`` (lease passed) or ``"waiting"``
    #: (a signal wait whose deadline passed)
    status: str = StepStatus.QUEUED.value
    priority: int | None = None
    #: the run's stored trace context, carried by the re-published message
    trace: dict[str, str] | None = None


@dataclass(frozen=True)
class ClaimLimits:
    """Limits a claim must respect, with their keys already computed."""

    queue: str
    queue_concurrency: int | None = None
    key: str | None = None
    key_concurrency: int | None = None
    #: ``(rate key, limit, window in ms)``
    rates: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class Delayed:
    """A claim refused by a limit: try again in ``ms`` milliseconds.

    A claim refused by a concurrency limit waits as a row (:mod:`.handoff`): ``slot``
    is the limit's key, ``due`` the fallback timer's time on the row (the slot is
    handed over sooner), and ``send`` is False for a copy of a message whose step
    waits already, with its timer armed: nothing is to be sent for it.
    """

    ms: int
    reason: str
    slot: str | None = None
    due: datetime | None = None
    send: bool = True


@dataclass
class Handoff:
    """The concurrency slots a running step holds, for the call that stops it.

    Given to ``Runs.complete``, ``Runs.schedule_retry`` or ``Runs.fail``: the
    transaction that records the step hands each slot it frees (its own
    ``concurrency``, through the row's ``limit_key``, and its ``queue``'s, when
    that queue has a concurrency limit) to the oldest step waiting for it, and
    once it has committed, ``handed`` lists those steps for the caller to publish.
    """

    queue: str | None = None
    handed: list[DueStep] = field(default_factory=list)


@dataclass(frozen=True)
class ReceivedSignal:
    """A signal a run received (kept even when it came before its step waited)."""

    name: str
    received_at: datetime | None
    # The payload may hold secrets (stored in the clear): out of the repr.
    payload: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class SignalWait:
    """A run's ``waiting`` step: a join, or a step waiting for a signal.

    ``deadline``: when only the signal is missing and the wait has a timeout,
    the step row's ``scheduled_at`` (the wait times out then), else ``None``.
    """

    step_id: str
    name: str
    pending: int | None
    deadline: datetime | None
