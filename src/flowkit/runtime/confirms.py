"""A pika channel in publisher-confirm mode whose confirms are settled per batch.

The publisher thread (:mod:`.sender`) writes a batch of messages and then waits
once for RabbitMQ's confirms of the whole batch (``basic.ack``, usually one with
``multiple`` set), instead of an AMQP transaction per batch: RabbitMQ routes each
message as it arrives rather than at ``tx.commit``, and a confirm costs the broker
and the client a fraction of what a transaction does. A confirm comes once the
persistent message is stored, as ``tx.commit-ok`` did, so a settled batch means the
same as before.

pika's :class:`~pika.adapters.blocking_connection.BlockingChannel` only knows
confirms one message at a time (its ``basic_publish`` then waits for each), so
confirm mode is turned on on the channel's own asynchronous channel: the blocking
channel's ``basic_publish`` writes without waiting, the acks reach
:meth:`ConfirmedChannel._on_confirm`, and :meth:`ConfirmedChannel.settle` runs the
connection until none is outstanding (a closed channel or connection raises, as
``tx.commit`` did).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfirmedChannel"]


class ConfirmedChannel:
    """``channel`` in confirm mode: :meth:`publish` counts delivery tags, :meth:`settle`
    waits for their confirms.

    Parameters:
        channel: a pika ``BlockingChannel`` (or one with its ``_impl`` and
            ``_flush_output``), not yet in confirm or transaction mode.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._sent = 0  # the last delivery tag: RabbitMQ numbers a channel's publishes from 1
        self._outstanding: set[int] = set()
        self._nacked = 0
        selected: list[Any] = []
        channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        channel._flush_output(lambda: bool(selected))

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open)

    def publish(self, routing_key: str, body: bytes, properties: Any) -> None:
        """Write one message to the default exchange; its confirm is awaited by :meth:`settle`."""
        # Counted first: the write also reads what came in, so its own confirm can
        # arrive before basic_publish returns.
        self._sent += 1
        self._outstanding.add(self._sent)
        self.channel.basic_publish(
            exchange="", routing_key=routing_key, body=body, properties=properties
        )

    def settle(self) -> None:
        """Wait until every message published so far is confirmed.

        Raises:
            pika.exceptions.NackError: RabbitMQ refused to store one of them (a broker
                failure: the batch is sent again).
            pika.exceptions.AMQPError: the channel or the connection closed meanwhile.
        """
        if self._outstanding:
            self.channel._flush_output(lambda: not self._outstanding)
        nacked, self._nacked = self._nacked, 0
        if nacked:
            import pika  # loaded with the RabbitMQ broker

            raise pika.exceptions.NackError([])

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple and tag == 0:  # every one so far
            settled = set(self._outstanding)
        elif method.multiple:
            settled = {t for t in self._outstanding if t <= tag}
        else:
            settled = {tag} & self._outstanding
        self._outstanding -= settled
        if type(method).__name__ == "Nack":
            self._nacked += len(settled)
