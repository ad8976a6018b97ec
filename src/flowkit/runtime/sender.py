"""The per-process publisher thread of a RabbitMQ broker: hand over now, settle in batches.

A :class:`~.publisher.RabbitmqPublisher` does not wait for RabbitMQ on the
caller's thread. :meth:`Sender.put` appends the messages to this process's queue
and returns: the rows they are for are already committed, so a message lost with
the process leaves a queued row that a redelivery or the recovery sweep publishes
(``docs/runtime.md``). One daemon thread, ``flowkit-publisher``, drains the queue:
up to :data:`BATCH_MAX` messages at a time, written on its own channel in
publisher-confirm mode and settled by one wait for the batch's confirms
(:mod:`.confirms`: RabbitMQ confirms a persistent message once it is stored, and
routes each message as it arrives). While one batch is on its way the next one
gathers, so concurrent publishers share a round trip: a group commit for the broker.
Dramatiq's middleware sees every message (``before_enqueue``, ``after_enqueue``,
signing by the process's encoder), on this thread.

How RabbitMQ is known to be down:

* While idle, the thread polls its open connection every :data:`IDLE_POLL` second
  (``process_data_events(0)``: the heartbeats due are sent, a close RabbitMQ sent
  is read); a connection found closed costs one line and is reopened at once, and
  one that cannot be reopened makes the broker *down*.
* A batch that fails on a connection that worked is tried once more on a new one
  (the same one line); if that fails too, the broker is down and the batch goes
  back to the head of the queue.
* While the thread holds messages it could not deliver, :meth:`Sender.ready` and
  :meth:`Sender.put` raise :class:`~flowkit.BrokerError` in words at once (``put``
  keeps its messages), and the thread tries again with backoff
  (:class:`~.backoff.BrokerOutage`: ``$FLOWKIT_BROKER_RETRY_SECONDS`` doubling to
  :data:`RETRY_CAP`), with one WARNING when that starts and one INFO when it ends.
  Down with nothing held, each ``ready()`` waits for one connection attempt
  (shared by concurrent callers), so a caller that retries sets the pace.

At most :data:`PENDING_MAX` messages wait; beyond, new ones are dropped with a
WARNING (their rows are stored: the recovery sweep publishes them).
:meth:`Sender.close` flushes what is pending within a timeout, and so does an
interpreter that exits without closing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeAlias

import dramatiq
from dramatiq.common import current_millis, dq_name, q_name

from ..config import mask_url
from ..errors import BrokerError
from ..redact import redact
from .amqp import connected, describe, is_broker_failure
from .backoff import BrokerOutage
from .confirms import ConfirmedChannel
from .connections import probe, reconnecting
from .faults import fault

__all__ = ["BATCH_MAX", "CLOSE_TIMEOUT", "IDLE_POLL", "PENDING_MAX", "RETRY_CAP", "Sender"]

log = logging.getLogger("flowkit.broker")

#: The most messages published and settled in one wait for their confirms.
BATCH_MAX = 500
#: The most messages waiting in one process; beyond, new ones are dropped (and recovered).
PENDING_MAX = 100_000
#: How long ``close()`` (``App.close()``) waits for what is pending, by default.
CLOSE_TIMEOUT = 5.0
#: An idle thread polls its connection this often (seconds).
IDLE_POLL = 1.0
#: The longest wait between two tries while messages wait for a broker that is down.
RETRY_CAP = 2.0
#: ``put()`` says "down" when the last attempt failed less than this long ago (seconds).
FRESH = 1.0
#: The longest ``ready()`` waits for a connection attempt to end.
READY_WAIT = 30.0
THREAD_NAME = "flowkit-publisher"

#: A message, its delay in ms (``None``: none) and when it was handed over (ms).
Item: TypeAlias = "tuple[dramatiq.Message[Any], int | None, int]"

_UP, _DOWN, _UNKNOWN = "up", "down", "unknown"


class Sender:
    """The publisher thread of one process for a Dramatiq RabbitMQ ``broker`` at ``url``.

    Parameters:
        broker: the RabbitmqBroker (its per-thread connection, queues and middleware).
        url: its URL, named (masked) in errors.
        batch: the most messages settled in one wait for their confirms.
        limit: the most messages waiting; beyond, new ones are dropped with a WARNING.
    """

    def __init__(
        self, broker: Any, url: str, *, batch: int = BATCH_MAX, limit: int = PENDING_MAX
    ) -> None:
        self.broker, self.url, self.batch, self.limit = broker, url, batch, limit
        self._outage = BrokerOutage(log, f"RabbitMQ at {mask_url(url)}", cap=RETRY_CAP)
        self._local = threading.local()  # the thread's confirm-mode channel
        self._at_exit = False
        self._reset()
        _SENDERS.add(self)

    def _reset(self) -> None:
        """The state before the thread starts (again after a fork: the parent's is not ours)."""
        self._cond = threading.Condition()
        self._pending: deque[Item] = deque()
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._state = _UNKNOWN
        self._error: BaseException | None = None
        self._tried_at, self._attempts = 0.0, 0
        self._want_try = self._closing = self._gave_up = False
        self._dropped = 0

    # -- the callers' side -------------------------------------------------------
    def put(self, batch: Sequence[tuple[dramatiq.Message[Any], int | None]]) -> None:
        """Hand ``(message, delay_ms)`` pairs to the thread and return.

        Raises:
            BrokerError: RabbitMQ is known to be down (in words); the messages are kept
                and go out when it is back.
        """
        at = current_millis()
        with self._cond:
            self._ensure()
            held = self._held()
            fresh = time.monotonic() - self._tried_at < FRESH
            down = self._state == _DOWN and (held > 0 or fresh)
            room = max(self.limit - held, 0)
            if room < len(batch):
                self._drop(len(batch) - room)
            self._pending.extend((m, d, at) for m, d in batch[:room])
            self._cond.notify_all()
            error = self._error
        if down:
            raise BrokerError(describe(error or ConnectionError(), self.url))

    def ready(self) -> None:
        """Return when RabbitMQ takes messages; raise at once while it is known to be down.

        Down with nothing held (or not tried yet), one connection attempt answers,
        shared by the callers waiting for it.

        Raises:
            BrokerError: RabbitMQ cannot be reached or used, in words.
        """
        if self._state == _UP and self._thread is not None:
            return
        with self._cond:
            self._ensure()
            if self._state != _UP and not (self._state == _DOWN and self._held()):
                seen = self._attempts
                self._want_try = self._state == _DOWN
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._attempts > seen, READY_WAIT)
            state, error = self._state, self._error
        if state == _DOWN:
            raise BrokerError(describe(error or ConnectionError(), self.url))
        if state == _UNKNOWN:
            raise BrokerError(describe(TimeoutError(), self.url))

    def flush(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Wait until every message handed over is settled; ``False`` after ``timeout`` s."""
        with self._cond:
            return self._cond.wait_for(lambda: self._held() == 0, timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Flush what is pending (within ``timeout`` s; one more try while RabbitMQ is
        down), then stop the thread, which closes its connection. Messages left are
        said in one WARNING: their rows are stored and the recovery sweep sends them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._closing = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._held() == 0 or self._gave_up, timeout)
            left, error = self._held(), self._error
            self._pending.clear()
            self._inflight = 0
            self._generation += 1  # that thread stops, whatever it is doing
            self._thread, self._state = None, _UNKNOWN
            self._closing = self._gave_up = False
            self._cond.notify_all()
        thread.join(max(deadline - time.monotonic(), 0.5))
        if left:
            why = f" ({describe(error, self.url)})" if error is not None else ""
            log.warning(
                "%d message(s) were not published before the publisher closed%s; their steps "
                "are stored and the recovery sweep publishes them",
                left,
                why,
            )

    def _held(self) -> int:
        return len(self._pending) + self._inflight

    def _ensure(self) -> None:
        """Start this process's thread if it is not running (first use, after a close)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._generation += 1
        self._thread = threading.Thread(
            target=self._run, args=(self._generation,), name=THREAD_NAME, daemon=True
        )
        self._thread.start()
        if not self._at_exit:  # a script that never closes its App still sends what it submitted
            atexit.register(_close_at_exit, weakref.ref(self))
            self._at_exit = True

    def _drop(self, n: int) -> None:
        if not self._dropped:
            log.warning(
                "%d messages already wait for RabbitMQ: dropping new ones (%d so far); "
                "their steps are stored and the recovery sweep publishes them",
                self._held(),
                n,
            )
        self._dropped += n

    # -- the thread ----------------------------------------------------------------
    def _run(self, generation: int) -> None:
        """Connect, then deliver batches, tend the idle connection and retry when due."""
        _quiet_pika_here()
        self._local.generation = generation  # a thread a close() left behind changes nothing
        try:
            self._attempt()
            while (work := self._next(generation)) != "stop":
                if isinstance(work, list):
                    self._deliver(work)
                elif work == "try":
                    self._attempt()
                else:
                    self._tend()
        except Exception:  # a bug: say it, and let the rows and the sweep recover the rest
            log.exception("the publisher thread stopped")
        finally:
            self._local.channel = None
            with contextlib.suppress(Exception):
                del self.broker.connection  # this thread's, with its channels

    def _next(self, generation: int) -> list[Item] | str:
        """The next thing to do: a batch, ``"try"``, ``"idle"`` (a second without work) or
        ``"stop"``."""
        with self._cond:
            while True:
                if generation != self._generation:
                    return "stop"
                if self._closing and (self._gave_up or not self._held()):
                    return "stop"
                if self._want_try:
                    self._want_try = False
                    return "try"
                if self._pending:
                    down = self._state == _DOWN and not self._closing
                    wait = self._outage.remaining() if down else 0.0
                    if wait <= 0:
                        n = min(self.batch, len(self._pending))
                        self._inflight = n
                        return [self._pending.popleft() for _ in range(n)]
                    self._cond.wait(wait)
                elif not self._cond.wait(IDLE_POLL):
                    return "idle"

    def _current(self) -> bool:
        """Whether this thread is the sender's current one (not one a close() let go)."""
        return getattr(self._local, "generation", None) == self._generation

    def _tend(self) -> None:
        """A second without work: poll the open connection (heartbeats, a close RabbitMQ
        sent); one found closed is reopened now, so ``ready()`` knows."""
        if self._state == _UP:
            probe(self.broker)
            if self._connection() is None:
                self._attempt()

    def _attempt(self) -> None:
        """One connection attempt: the first, or one a ``ready()`` asked for."""
        try:
            connected(self.broker, self.url)
        except BrokerError as exc:
            self._failed(exc)
        else:
            self._succeeded()

    def _succeeded(self, settled: int = 0) -> None:
        """An attempt worked (``settled``: the messages of a batch it delivered)."""
        self._outage.recovered()  # said before a caller waiting sees the broker up
        with self._cond:
            if not self._current():
                return
            self._state, self._error = _UP, None
            self._tried_at, self._attempts = time.monotonic(), self._attempts + 1
            self._inflight -= settled
            dropped, self._dropped = self._dropped, 0
            self._cond.notify_all()
        if dropped:
            log.info("%d message(s) were dropped while RabbitMQ could not take them", dropped)

    def _failed(self, exc: BaseException) -> None:
        with self._cond:
            if not self._current():
                return
            self._state, self._error = _DOWN, exc
            self._tried_at, self._attempts = time.monotonic(), self._attempts + 1
            self._gave_up = self._closing
            held = self._held()
            self._cond.notify_all()
        if held:  # messages wait: tries with backoff, said once each way
            words = f"{describe(exc, self.url)}; {held} message(s) wait to be published"
            self._outage.failed(BrokerError(words))

    def _deliver(self, batch: list[Item]) -> None:
        """Publish ``batch`` and settle its confirms. A failure on a connection that worked is
        tried once more on a new one; a refusal of the channel (not the connection) is
        tried message by message; otherwise the batch is held again: RabbitMQ is down."""
        error = self._try(batch)
        if error is not None and _refused(error):
            error = self._one_by_one(batch)
        elif error is not None and self._state == _UP:
            reconnecting(self.broker, _words(error))
            error = self._try(batch)
        if error is None:
            self._succeeded(len(batch))
            return
        with self._cond:
            if self._current():
                self._inflight = 0
                self._pending.extendleft(reversed(batch))
        self._failed(error)

    def _one_by_one(self, batch: list[Item]) -> BaseException | None:
        for item in batch:
            error = self._try([item])
            if error is not None and not _refused(error):
                return error  # the connection failed: all of them wait (copies are harmless)
            if error is not None:
                log.warning(
                    "RabbitMQ refused a message for queue %s: %s; dropped (its step is stored "
                    "and the recovery sweep publishes it)",
                    item[0].queue_name,
                    describe(error, self.url),
                )
        return None

    def _try(self, batch: list[Item]) -> BaseException | None:
        """Publish ``batch``; the broker failure, if any (a bug is logged, the batch dropped)."""
        try:
            self._publish(batch)
        except Exception as exc:
            if not is_broker_failure(exc):
                log.exception(
                    "publishing %d message(s) failed; their steps are stored and the recovery "
                    "sweep publishes them",
                    len(batch),
                )
                return None
            self._local.channel = None
            for message, _, _ in batch:  # declared again next time (a queue may be gone)
                self.broker.queues_pending.add(q_name(message.queue_name))
            return exc
        return None

    def _publish(self, batch: list[Item]) -> None:
        import pika  # loaded with the RabbitMQ broker; not needed by memory://

        broker = self.broker
        probe(broker)  # idle for over a second: a connection RabbitMQ closed is replaced
        if self._connection() is None:
            connected(broker, self.url)
        channel = self._channel()
        now = current_millis()
        for message, delay, at in batch:
            queue_name = message.queue_name
            broker.declare_queue(queue_name, ensure=True)
            if delay is not None:  # counted from the hand-over, not from now
                delay = max(at + delay - now, 0)
                queue_name = dq_name(queue_name)
                message = message.copy(queue_name=queue_name, options={"eta": now + delay})
            broker.emit_before("enqueue", message, delay)
            channel.publish(
                queue_name,
                message.encode(),
                pika.BasicProperties(
                    delivery_mode=2, priority=message.options.get("broker_priority")
                ),
            )
            broker.emit_after("enqueue", message, delay)
        fault("before-confirm")
        channel.settle()

    def _connection(self) -> Any:
        """This thread's open-or-dead connection of the broker, or ``None``."""
        return getattr(getattr(self.broker, "state", None), "connection", None)

    def _channel(self) -> ConfirmedChannel:
        """The thread's confirm-mode channel on its connection (made once per connection)."""
        connection = self.broker.connection
        held = getattr(self._local, "channel", None)
        if held is not None and held[0] is connection and held[1].is_open:
            return held[1]  # type: ignore[no-any-return]
        channel = ConfirmedChannel(connection.channel())
        self._local.channel = (connection, channel)
        return channel


def _refused(exc: BaseException) -> bool:
    """Whether RabbitMQ refused an operation on the channel (its connection is fine)."""
    import pika  # loaded with the RabbitMQ broker

    inner = getattr(exc, "message", None) if isinstance(exc, dramatiq.errors.BrokerError) else exc
    errors = pika.exceptions
    return isinstance(inner, errors.AMQPChannelError) and not isinstance(
        inner, errors.ChannelWrongStateError
    )


def _words(exc: BaseException) -> str:
    inner = getattr(exc, "message", None) if isinstance(exc, dramatiq.errors.BrokerError) else exc
    inner = inner if isinstance(inner, BaseException) else exc
    return redact(f"{type(inner).__name__}: {inner}")


class _PublisherThreadQuiet(logging.Filter):
    """Drops pika's own lines logged on the publisher thread: it says each failure once,
    in words, and a filter costs nothing until pika logs (unlike changing its level)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


_QUIET = _PublisherThreadQuiet()
_SENDERS: weakref.WeakSet[Sender] = weakref.WeakSet()


def _quiet_pika_here() -> None:
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.split(".")[0] != "pika" or not isinstance(logger, logging.Logger):
            continue
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


def _close_at_exit(ref: weakref.ref[Sender]) -> None:
    sender = ref()
    if sender is not None:
        sender.close()


def _forked() -> None:
    """In a forked child, the parent's thread, queue and lock are not this process's."""
    for sender in list(_SENDERS):
        sender._reset()


os.register_at_fork(after_in_child=_forked)
