"""RabbitMQ queues of a chosen type: Dramatiq's RabbitMQ broker with quorum queues.

Dramatiq declares three queues per queue name (the queue, its delay queue
``.DQ`` and its dead-letter queue ``.XQ``) and has no queue-type option.
The broker flowkit builds (:func:`broker_class`, Dramatiq's broker with
:class:`QueueTypes` mixed in) extends the arguments of those three declares
(Dramatiq's ``_build_queue_arguments`` and ``_declare_xq_queue``, tested against
the pinned Dramatiq range): with ``queue_type="quorum"`` each is declared with
``x-queue-type: quorum``, so RabbitMQ replicates it over the cluster's nodes (Raft).

What quorum queues change (``docs/operations.md``, "Running on a RabbitMQ cluster"):

* no ``x-max-priority``: RabbitMQ refuses it on a quorum queue, so
  :func:`~flowkit.config.check_queue_type` refuses ``max_priority`` with quorum queues;
* no ``x-delivery-limit``: RabbitMQ 3.x counts a redelivery each time a consumer's
  connection closes, and flowkit's SIGTERM path and delayed messages are redelivered
  by design; with no limit nothing is dead-lettered for it (RabbitMQ 4.0 has a default
  of 20: raise it with a ``delivery-limit`` policy);
* a queue's type cannot change: declaring an existing classic queue as quorum (or
  the reverse) is refused with ``406 PRECONDITION_FAILED``, which this broker reports
  as one :class:`~flowkit.BrokerError` naming the queue and how to migrate
  (:func:`~flowkit.runtime.amqp.queue_type_mismatch`).

Dramatiq's broker otherwise works as it is: the dead-letter queue keeps its message
TTL, and the transactions that fan-out publishing uses work on quorum queues.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dramatiq.common import xq_name

from .amqp import queue_type_mismatch

__all__ = ["QueueTypes", "broker_class", "queue_arguments"]


def queue_arguments(arguments: dict[str, Any], queue_type: str) -> dict[str, Any]:
    """Dramatiq's declare ``arguments`` for a queue of ``queue_type`` (a new dict)."""
    if queue_type != "quorum":
        return dict(arguments)
    out = {k: v for k, v in arguments.items() if k != "x-max-priority"}
    out["x-queue-type"] = "quorum"
    return out


class QueueTypes:
    """Declares the queues of Dramatiq's ``RabbitmqBroker`` as ``queue_type`` queues.

    Mixed into the broker by :func:`broker_class` (which loads pika, so importing
    this module does not). ``queue_type``: ``"classic"`` (Dramatiq's declares,
    unchanged) or ``"quorum"``.

    Raises:
        BrokerError: (on a declare) a queue exists with another type, in words.
    """

    queue_type: str = "classic"

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        base: Any = super()
        return queue_arguments(base._build_queue_arguments(queue_name), self.queue_type)

    def _declare_queue(self, queue_name: str) -> Any:
        base: Any = super()
        return self._declaring(base._declare_queue, queue_name)

    def _declare_dq_queue(self, queue_name: str) -> Any:
        base: Any = super()
        return self._declaring(base._declare_dq_queue, queue_name)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        base: Any = super()
        if self.queue_type != "quorum":
            return self._declaring(base._declare_xq_queue, queue_name)
        from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL  # loaded with the broker

        arguments = queue_arguments({"x-message-ttl": DEAD_MESSAGE_TTL}, self.queue_type)
        me: Any = self
        channel = me.channel

        def declare(name: str) -> Any:
            return channel.queue_declare(queue=xq_name(name), durable=True, arguments=arguments)

        return self._declaring(declare, queue_name)

    def _declaring(self, declare: Callable[[str], Any], queue_name: str) -> Any:
        """``declare(queue_name)``; a queue of another type becomes one BrokerError in
        words (the channel RabbitMQ closed is dropped: the next declare opens one)."""
        import pika  # loaded with the broker

        try:
            return declare(queue_name)
        except pika.exceptions.ChannelClosedByBroker as exc:
            mismatch = queue_type_mismatch(exc, self.queue_type)
            if mismatch is None:
                raise
            base: Any = self
            del base.channel
            raise mismatch from None


@functools.cache
def broker_class() -> type[Any]:
    """``FlowkitRabbitmqBroker``: Dramatiq's ``RabbitmqBroker`` with :class:`QueueTypes`
    (built on first use: Dramatiq's RabbitMQ broker imports pika)."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # pika loads with the broker

    return type(
        "FlowkitRabbitmqBroker",
        (QueueTypes, RabbitmqBroker),
        {"__module__": __name__, "__doc__": QueueTypes.__doc__},
    )
