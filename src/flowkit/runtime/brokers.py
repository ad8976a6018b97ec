"""Broker URLs to Dramatiq brokers: ``memory://`` → StubBroker, ``amqp://`` → RabbitmqBroker."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
)

from ..config import Settings, mask_url
from ..errors import BrokerError, ConfigurationError
from ..redact import MessageFilter, redact, remember, remember_environment
from .quarantine import DeadLetterRecorder, RecordingEncoder
from .wire import WirePolicy

__all__ = ["create_broker"]


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
    # no timeout must not be cut at Dramatiq's default 10 minutes.
    return [
        AgeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=0),
        CurrentMessage(),
        DeadLetterRecorder(),
        SafeLogs(),
    ]


def create_broker(url: str, *, max_priority: int | None = None) -> dramatiq.Broker:
    """Build the broker for ``url``; nothing connects until the first message or consumer.

    It also installs flowkit's message encoder (JSON, like Dramatiq's, recording
    undecodable messages as dead letters): Dramatiq's encoder is process-wide.
    Never a pickle encoder: a worker decodes nothing but JSON.

    Raises:
        ConfigurationError: an unsupported URL.
    """
    if not isinstance(dramatiq.get_encoder(), RecordingEncoder):
        dramatiq.set_encoder(RecordingEncoder())
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return StubBroker(middleware=_middleware())
    if scheme in {"amqp", "amqps"}:
        try:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker
        except ImportError as exc:  # pragma: no cover - pika is a hard dependency
            raise ConfigurationError("RabbitMQ support needs pika: pip install pika") from exc
        try:
            return RabbitmqBroker(
                url=url,
                confirm_delivery=True,
                max_priority=max_priority,
                middleware=_middleware(),
            )
        except Exception as exc:
            raise BrokerError(f"cannot use broker {mask_url(url)}: {redact(str(exc))}") from exc
    raise ConfigurationError(f"broker URL {mask_url(url)!r} is not supported")


def check_broker(broker: dramatiq.Broker, url: str) -> None:
    """Connect now, so a worker fails at start with a clear error rather than retrying forever.

    Raises:
        BrokerError: the broker cannot be reached.
    """
    if isinstance(broker, StubBroker):
        return
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    # pika logs each failed attempt with a traceback; the error below says it once.
    pika_log.setLevel(logging.CRITICAL)
    try:
        broker.connection  # type: ignore[attr-defined]  # noqa: B018 - connecting is the check
    except Exception as exc:
        raise BrokerError(
            f"cannot connect to broker {mask_url(url)} ({type(exc).__name__}): "
            "is RabbitMQ running and reachable, and are the credentials right?"
        ) from exc
    finally:
        pika_log.setLevel(level)


def set_dead_letter_recorder(broker: dramatiq.Broker, recorder: Any) -> None:
    """Send this broker's dead letters (and undecodable messages) to ``recorder``."""
    for m in broker.middleware:
        if isinstance(m, DeadLetterRecorder):
            m.recorder = recorder
    encoder = dramatiq.get_encoder()
    if isinstance(encoder, RecordingEncoder):
        encoder.recorder = recorder


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
