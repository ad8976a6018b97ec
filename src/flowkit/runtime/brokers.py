"""Broker URLs to Dramatiq brokers: ``memory://`` → StubBroker, ``amqp://`` → RabbitmqBroker.

Several ``amqp://`` URLs (the nodes of a RabbitMQ cluster, joined by ``;``) make one
broker that connects to the first node that answers, in an order each process
shuffles once (``$FLOWKIT_BROKER_SHUFFLE=0`` keeps the order given), so the
workers spread over the nodes; a connection lost is reopened on the next node.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    CurrentMessage,
    Middleware,
    Retries,
    ShutdownNotifications,
)

from .._clock import DUE_OPTION
from .._clock import current as current_clock
from ..config import Settings, broker_urls, check_queue_type, mask_url
from ..errors import BrokerError, ConfigurationError
from ..redact import MessageFilter, redact, remember, remember_environment
from .amqp import broker_unreachable, connected, is_broker_failure
from .connections import FreshConnections, connection_name, name_connections
from .quarantine import DeadLetterRecorder, RecordingEncoder
from .quorum import broker_class
from .wire import WirePolicy

__all__ = ["MemoryBroker", "create_broker"]


class MemoryBroker(StubBroker):
    """The in-process ``memory://`` broker: Dramatiq's StubBroker, timers kept by the clock.

    A delayed message is handed to the process's clock first
    (:meth:`flowkit._clock.Clock.hold`). The wall clock declines and the
    StubBroker delays it as usual; the :class:`~flowkit.testing.VirtualClock` of
    a test keeps it and enqueues it when the test moves time past it.
    """

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        if delay is not None:
            send = lambda: self.enqueue(message)  # noqa: E731 - sent later, without the delay
            due_ms = message.options.get(DUE_OPTION)
            due = None
            if isinstance(due_ms, int):
                due = datetime.fromtimestamp(due_ms / 1000, timezone.utc)
            if current_clock().hold(delay, send, message.message_id, due):
                return message
        return super().enqueue(message, delay=delay)


class ClockHandled(Middleware):
    """``memory://`` only: tells the process's clock each message a worker is done with.

    :meth:`VirtualClock.advance <flowkit.testing.VirtualClock.advance>` returns
    once the timers it sent have been handled; the wall clock ignores the call.
    """

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        current_clock().handled(message.message_id)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        current_clock().handled(message.message_id)


class SafeLogs(Middleware):
    """Dramatiq's worker and consumer threads log a message by its actor and id only.

    Dramatiq's own lines (``Failed to process message %s ...``) print a
    message with its arguments; the filter on each thread's logger names
    the message instead, at every level, whatever handlers are configured.
    """

    _filter = MessageFilter()

    def _guard(self, thread: Any) -> None:
        logger = getattr(thread, "logger", None)
        if isinstance(logger, logging.Logger) and self._filter not in logger.filters:
            logger.addFilter(self._filter)

    def after_consumer_thread_boot(self, broker: Any, thread: Any) -> None:
        self._guard(thread)

    def after_worker_thread_boot(self, broker: Any, thread: Any) -> None:
        self._guard(thread)


def _middleware() -> list[Any]:
    # Dramatiq's defaults minus TimeLimit: flowkit enforces step timeouts itself,
    # around the step function only (see runtime/timeouts.py), and a step with
    # no timeout must not be cut at Dramatiq's default 10 minutes. Minus AgeLimit,
    # Callbacks and Pipelines too: flowkit's messages use none of them, and each
    # middleware costs every message a call.
    return [
        ShutdownNotifications(),
        Retries(max_retries=0),
        CurrentMessage(),
        DeadLetterRecorder(),
        SafeLogs(),
    ]


def node_order(url: str) -> list[str]:
    """The URLs of ``url`` in the order this process tries them: shuffled, unless
    ``$FLOWKIT_BROKER_SHUFFLE`` is ``0`` (the first URL is then preferred)."""
    urls = broker_urls(url) or [url]
    if os.environ.get("FLOWKIT_BROKER_SHUFFLE", "1").strip().lower() not in {"0", "false", "no"}:
        random.shuffle(urls)
    return urls


def create_broker(
    url: str, *, max_priority: int | None = None, queue_type: str = "classic"
) -> dramatiq.Broker:
    """Build the broker for ``url``; nothing connects until the first message or consumer.

    It also installs flowkit's message encoder (JSON, like Dramatiq's, recording
    undecodable messages as dead letters): Dramatiq's encoder is process-wide.
    Never a pickle encoder: a worker decodes nothing but JSON.

    Parameters:
        url: ``memory://``, or one or more ``amqp://`` URLs joined by ``;``.
        max_priority: RabbitMQ message priorities 0..N (classic queues only).
        queue_type: ``"classic"`` or ``"quorum"`` (:mod:`.quorum`).

    Raises:
        ConfigurationError: an unsupported URL, or ``max_priority`` with quorum queues.
    """
    check_queue_type(queue_type, max_priority)
    if not isinstance(dramatiq.get_encoder(), RecordingEncoder):
        dramatiq.set_encoder(RecordingEncoder())
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryBroker(middleware=[*_middleware(), ClockHandled()])
    if scheme in {"amqp", "amqps"}:
        urls = node_order(url)
        try:
            broker = broker_class()(
                url=urls if len(urls) > 1 else urls[0],
                confirm_delivery=True,
                max_priority=max_priority,
                middleware=[*_middleware(), FreshConnections()],
            )
        except Exception as exc:
            raise BrokerError(f"cannot use broker {mask_url(url)}: {redact(str(exc))}") from exc
        broker.queue_type = queue_type
        name_connections(broker, connection_name())
        made: dramatiq.Broker = broker
        return made
    raise ConfigurationError(f"broker URL {mask_url(url)!r} is not supported")


def check_broker(broker: dramatiq.Broker, url: str) -> None:
    """Connect now (this thread's connection, which publishing reuses), so a worker fails
    at start and a command changes nothing when RabbitMQ cannot be used.

    Raises:
        BrokerError: the broker cannot be reached, in words (``runtime/amqp.py``).
    """
    if isinstance(broker, StubBroker):
        return
    connected(broker, url)
    if getattr(broker, "queue_type", "classic") == "quorum":
        declare_queues(broker, url)


def declare_queues(broker: Any, url: str, names: Iterable[str] | None = None) -> None:
    """Declare ``names`` (default: every queue of ``broker``'s actors) on RabbitMQ now,
    so a queue of another type (:mod:`.quorum`) stops a worker at start, in words, and
    what is sent to them from then on is kept.

    Raises:
        BrokerError: a queue exists with another type, or RabbitMQ cannot be used.
    """
    try:
        for name in sorted(broker.get_declared_queues() if names is None else set(names)):
            broker.declare_queue(name, ensure=True)
    except BrokerError:
        raise
    except Exception as exc:
        if not is_broker_failure(exc):
            raise
        raise broker_unreachable(url, exc) from exc


def set_dead_letter_recorder(broker: dramatiq.Broker, recorder: Any) -> None:
    """Send this broker's dead letters (and undecodable messages) to ``recorder``."""
    for m in broker.middleware:
        if isinstance(m, DeadLetterRecorder):
            m.recorder = recorder
    encoder = dramatiq.get_encoder()
    if isinstance(encoder, RecordingEncoder):
        encoder.recorder = recorder


def set_unknown_step_check(broker: dramatiq.Broker, check: Callable[[str, str, str], bool]) -> None:
    """Strand the run of a message whose step its flow no longer has (:mod:`.stranded`)
    rather than keep a dead letter for it."""
    for m in broker.middleware:
        if isinstance(m, DeadLetterRecorder):
            m.unknown_step = check


def name_worker_connections(broker: dramatiq.Broker, worker_id: Callable[[], str | None]) -> None:
    """Name the connections of this broker's workers ``flowkit <worker_id()> <pid>``."""
    for m in broker.middleware:
        if isinstance(m, FreshConnections):
            m.worker_id = worker_id


def secure_process(settings: Settings) -> None:
    """Sign and check every message of this process per ``settings``; hide its secrets in logs.

    Dramatiq's encoder is process-wide, so the App that opened its broker
    last decides the signing keys and limits for the whole process.
    """
    encoder = dramatiq.get_encoder()
    if isinstance(encoder, RecordingEncoder):
        encoder.policy = WirePolicy.of(settings)
    remember(*settings.secrets())
    remember_environment()  # OPENAI_API_KEY, for the errors flowkit stores
