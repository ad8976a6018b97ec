"""Publishing many messages at once: one RabbitMQ round trip instead of one per message.

A fan-out step queues one message per item. With publisher confirms, Dramatiq
waits for the broker's acknowledgement of each message in turn; here the
messages of one batch go out in an AMQP transaction, and ``tx.commit-ok``
(sent once the persistent messages are on disk, as a confirm would be)
acknowledges them all. The in-process broker publishes one by one.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.common import current_millis, dq_name, q_name

__all__ = ["BATCH_MIN", "publish_many"]

#: Fewer messages than this go out one by one (a transaction costs two round trips).
BATCH_MIN = 8

_local = threading.local()


def publish_many(
    broker: dramatiq.Broker, messages: list[tuple[dramatiq.Message[Any], int | None]]
) -> None:
    """Publish ``(message, delay_ms)`` pairs; all are on the broker when it returns.

    Raises:
        dramatiq.errors.ConnectionClosed: the broker could not take them; some
            may have been published (a copy is harmless: the claim ignores it).
    """
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    if not isinstance(broker, RabbitmqBroker) or len(messages) < BATCH_MIN:
        for message, delay in messages:
            broker.enqueue(message, delay=delay)
        return
    import pika

    try:
        channel = _channel(broker)
        for message, delay in messages:
            queue_name = message.queue_name
            broker.declare_queue(queue_name, ensure=True)
            if delay is not None:
                queue_name = dq_name(queue_name)
                message = message.copy(
                    queue_name=queue_name, options={"eta": current_millis() + delay}
                )
            broker.emit_before("enqueue", message, delay)
            channel.basic_publish(
                exchange="",
                routing_key=queue_name,
                body=message.encode(),
                properties=pika.BasicProperties(
                    delivery_mode=2, priority=message.options.get("broker_priority")
                ),
            )
            broker.emit_after("enqueue", message, delay)
        channel.tx_commit()
    except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
        _local.__dict__.pop("channel", None)
        for message, _ in messages:
            broker.queues_pending.add(q_name(message.queue_name))
        raise dramatiq.errors.ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]


def _channel(broker: Any) -> Any:
    """This thread's transactional channel on the broker's connection (made once)."""
    connection = broker.connection
    held = getattr(_local, "channel", None)
    if held is not None and held[0] is connection and held[1].is_open:
        return held[1]
    channel = connection.channel()
    channel.tx_select()
    _local.channel = (connection, channel)
    return channel
