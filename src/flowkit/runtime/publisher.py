"""Publishing step and control messages: a :class:`RunRef` in, messages out.

Every message of a run is published with the run's :class:`RunRef`, so what
travels with a run (its key, its RabbitMQ priority, its trace context)
is never passed by hand and never forgotten on one path. Messages carry ids
only and are addressed by name (``<flow>.<step>`` on the step's queue), so a
process that does not import the flows (``flowkit recover``) can publish too.

:class:`Publisher` is the interface the :class:`~flowkit.runtime.engine.Engine`
is built with; :class:`BrokerPublisher` sends through any Dramatiq broker one
message at a time, before it returns (the in-process ``memory://`` broker), and
:class:`RabbitmqPublisher` hands the messages to this process's publisher thread
(:mod:`.sender`) and returns: the thread settles them in batches, one AMQP
transaction each, and :meth:`Publisher.close` flushes it;
:class:`MemoryPublisher` keeps what it is given, for tests (like httpx's
``MockTransport`` beside its real transports).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker

from .._clock import DUE_OPTION
from ..errors import BrokerError
from ..store import NewStep
from ..store.db import utcnow
from ..tracing import clean
from .amqp import describe, is_broker_failure
from .sender import CLOSE_TIMEOUT, Sender

__all__ = [
    "CONTROL_ACTOR",
    "CONTROL_QUEUE",
    "MAX_HOP_MS",
    "BrokerPublisher",
    "MemoryPublisher",
    "Outgoing",
    "Publisher",
    "RabbitmqPublisher",
    "RunRef",
    "publisher_for",
    "step_message",
]

#: The longest a timer message waits in the broker by default: Dramatiq holds
#: delayed messages unacknowledged in worker memory, and RabbitMQ closes
#: consumers that keep one past its consumer timeout (30 minutes by default).
#: Longer timers hop: the message wakes, the row says "not yet", a new one is sent.
MAX_HOP_MS = 10 * 60 * 1000
CONTROL_QUEUE = "flowkit.control"
CONTROL_ACTOR = "flowkit.control"
#: The recovery sweep's messages are handed over in chunks of at most this many.
_SWEEP_BATCH = 500


@dataclass(frozen=True)
class RunRef:
    """What every message of one run carries besides its step: built once, passed along.

    Parameters:
        flow: the run's flow name.
        run_id: the run's id.
        key: the run's idempotency key, if it has one.
        priority: the RabbitMQ priority of every message of the run.
        trace: the trace context (W3C ``traceparent``) its messages carry: the
            span that published them (:mod:`flowkit.tracing`).
    """

    flow: str
    run_id: str
    key: str | None = None
    priority: int | None = None
    trace: dict[str, str] | None = field(default=None, compare=False)

    @classmethod
    def of_message(cls, flow: str, message: dramatiq.Message[Any]) -> RunRef:
        """The run a delivered step or control message belongs to."""
        kw = message.kwargs
        return cls(
            flow,
            kw["run_id"],
            kw.get("key"),
            message.options.get("broker_priority"),
            clean(message.options.get("flowkit_trace")),
        )

    def options(self) -> dict[str, Any]:
        """The Dramatiq message options that carry this run's context."""
        opts: dict[str, Any] = {}
        if self.priority is not None:
            opts["broker_priority"] = self.priority
        if self.trace:
            opts["flowkit_trace"] = dict(self.trace)
        return opts


@dataclass(frozen=True)
class Outgoing:
    """A committed step row to publish a message for (``delay_ms``: a timer).

    A timer's ``due`` is the time on its row: the delay is counted from it when the
    message is sent, and the message carries it, so a clock that moves in between
    (a test's ``VirtualClock``) still fires the timer when the row says.
    """

    step_id: str
    name: str
    queue: str
    delay_ms: int | None = None
    due: datetime | None = None

    @classmethod
    def of(cls, step: NewStep) -> Outgoing:
        due = step.scheduled_at if step.delay_ms else None
        return cls(step.id, step.name, step.queue, step.delay_ms, due)

    def delay_now(self) -> int | None:
        """The delay to send it with now: to its ``due`` time, else ``delay_ms``."""
        if self.due is None:
            return self.delay_ms
        return max(int((self.due - utcnow()).total_seconds() * 1000), 0)


class Publisher:
    """Sends a run's messages; subclasses say how a batch reaches the broker.

    Parameters:
        broker: the Dramatiq broker the messages go to.
        max_hop_ms: the longest delay of one timer message (longer ones hop).
        url: the broker's URL, named (masked) when it cannot be reached.
    """

    def __init__(
        self,
        broker: dramatiq.Broker | None,
        *,
        max_hop_ms: int = MAX_HOP_MS,
        url: str = "memory://",
    ) -> None:
        self.broker = broker
        self.max_hop_ms = max_hop_ms
        self.url = url

    def publish(self, run: RunRef, steps: Sequence[Outgoing]) -> None:
        """One message per step; the rows are already committed. On RabbitMQ the messages
        are handed to the publisher thread, and the call returns before they are settled.

        Raises:
            BrokerError: the broker refused or could not be reached (said in words);
                the rows stay and the recovery sweep (``flowkit recover``) publishes them.
        """
        batch = [(step_message(run, s), self.hop(s.delay_now())) for s in steps]
        try:
            self.send(batch)
        except Exception as exc:
            if not is_broker_failure(exc):
                raise
            names = ", ".join(sorted({s.name for s in steps}))
            raise BrokerError(
                f"run {run.run_id} is stored but its step(s) {names} could not be published: "
                f"{describe(exc, self.url)}; `flowkit recover` publishes them once it is back"
            ) from exc

    def publish_many(self, items: Sequence[tuple[RunRef, Outgoing]]) -> None:
        """The messages of many runs' steps, in batches (the recovery sweep's).

        Raises:
            BrokerError: the broker refused or could not be reached (said in words).
        """
        for start in range(0, len(items), _SWEEP_BATCH):
            chunk = items[start : start + _SWEEP_BATCH]
            try:
                self.send([(step_message(run, s), self.hop(s.delay_now())) for run, s in chunk])
            except Exception as exc:
                if not is_broker_failure(exc):
                    raise
                raise BrokerError(
                    f"{len(items) - start} step message(s) could not be published: "
                    f"{describe(exc, self.url)}; the recovery sweep tries again later"
                ) from exc

    def publish_control(self, op: str, run: RunRef, delay_ms: int | None = None) -> None:
        """A message to the control actor (a run's deadline), hopping long delays.

        Raises:
            BrokerError: it could not be sent (the recovery sweep enforces deadlines).
        """
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=CONTROL_QUEUE,
            actor_name=CONTROL_ACTOR,
            args=(),
            kwargs={"op": op, "run_id": run.run_id},
            options=run.options(),
        )
        try:
            self.send([(message, None if delay_ms is None else self.hop(max(delay_ms, 0)))])
        except Exception as exc:
            if not is_broker_failure(exc):
                raise
            raise BrokerError(
                f"run {run.run_id}: the {op} timer could not be published: "
                f"{describe(exc, self.url)}; the recovery sweep enforces it"
            ) from exc

    def ready(self) -> None:
        """Check that the broker takes messages, before a caller stores what they are for.

        So ``submit`` with RabbitMQ down stores nothing; a publish once RabbitMQ is
        known to be down (it went away after the check) still raises, as
        :meth:`publish` says.

        Raises:
            BrokerError: the broker cannot be reached, in words.
        """

    def hop(self, delay_ms: int | None) -> int | None:
        """The delay of one message for a timer of ``delay_ms``."""
        return None if not delay_ms else min(delay_ms, self.max_hop_ms)

    def send(self, batch: list[tuple[dramatiq.Message[Any], int | None]]) -> None:
        """Put ``(message, delay_ms)`` pairs on the broker (or hand them to the thread that
        does); a broker failure raised here becomes the callers' :class:`BrokerError`."""
        raise NotImplementedError

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait (at most ``timeout`` seconds) until every message handed over is on the
        broker; ``False`` if some still wait. Synchronous publishers have nothing to wait for."""
        return True

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Flush what is pending (at most ``timeout`` seconds), then stop: called before the
        broker closes (``App.close()``). What is left is recovered from the rows."""


def step_message(run: RunRef, step: Outgoing) -> dramatiq.Message[Any]:
    """The message that runs ``step`` of ``run``: ids only, addressed by name."""
    return dramatiq.Message(
        queue_name=step.queue,
        actor_name=f"{run.flow}.{step.name}",
        args=(),
        kwargs={"step_id": step.step_id, "run_id": run.run_id, "key": run.key},
        options=run.options() if step.due is None else {**run.options(), DUE_OPTION: _ms(step.due)},
    )


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class MemoryPublisher(Publisher):
    """Keeps every message in :attr:`sent`, in order, with its delay; no broker.

    .. versionadded:: 0.2
    """

    def __init__(self, *, max_hop_ms: int = MAX_HOP_MS) -> None:
        super().__init__(None, max_hop_ms=max_hop_ms)
        #: ``(message, delay_ms)`` pairs, oldest first
        self.sent: list[tuple[dramatiq.Message[Any], int | None]] = []

    def send(self, batch: list[tuple[dramatiq.Message[Any], int | None]]) -> None:
        self.sent.extend(batch)

    def take(self) -> list[dramatiq.Message[Any]]:
        """The messages sent since the last call, oldest first."""
        taken, self.sent = [m for m, _ in self.sent], []
        return taken


class BrokerPublisher(Publisher):
    """One message at a time through Dramatiq's ``enqueue`` (any broker, e.g. ``memory://``)."""

    def send(self, batch: list[tuple[dramatiq.Message[Any], int | None]]) -> None:
        assert self.broker is not None
        for message, delay in batch:
            self.broker.enqueue(message, delay=delay)


class RabbitmqPublisher(Publisher):
    """Hands each batch to this process's publisher thread (:class:`~.sender.Sender`) and
    returns; the thread publishes what is queued in batches of up to
    :data:`~.sender.BATCH_MAX` messages, each settled by one wait for its publisher
    confirms (RabbitMQ confirms a persistent message once it is stored).

    :meth:`ready` and :meth:`publish` raise :class:`BrokerError` at once while
    RabbitMQ is known to be down (see :mod:`.sender`); the messages handed over are
    kept and sent when it is back, and a message lost with the process is recovered
    from its row.
    """

    def __init__(
        self,
        broker: dramatiq.Broker | None,
        *,
        max_hop_ms: int = MAX_HOP_MS,
        url: str = "memory://",
    ) -> None:
        super().__init__(broker, max_hop_ms=max_hop_ms, url=url)
        #: the process's publisher thread for this broker
        self.sender = Sender(broker, url)

    def ready(self) -> None:
        self.sender.ready()

    def send(self, batch: list[tuple[dramatiq.Message[Any], int | None]]) -> None:
        self.sender.put(batch)

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        return self.sender.flush(timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        self.sender.close(timeout)


def publisher_for(
    broker: dramatiq.Broker, *, max_hop_ms: int = MAX_HOP_MS, url: str = "memory://"
) -> Publisher:
    """The publisher for ``broker`` (at ``url``): batched on RabbitMQ, one by one elsewhere."""
    kind = BrokerPublisher if isinstance(broker, StubBroker) else RabbitmqPublisher
    return kind(broker, max_hop_ms=max_hop_ms, url=url)
