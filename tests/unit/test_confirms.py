"""The confirm-mode channel's bookkeeping: delivery tags, acks (single, multiple, out of
order, early) and nacks, on a stand-in for pika's blocking channel. The real RabbitMQ is
in ``tests/integration/test_publisher_rabbitmq.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pika
import pytest

from flowkit.runtime.amqp import is_broker_failure
from flowkit.runtime.confirms import ConfirmedChannel


class Impl:
    def __init__(self) -> None:
        self.on_confirm: Callable[[Any], None] | None = None
        self.selected = 0

    def confirm_delivery(self, ack_nack_callback: Callable[[Any], None], callback: Any) -> None:
        self.on_confirm = ack_nack_callback
        self.selected += 1
        callback(None)


class Channel:
    """pika's BlockingChannel as the confirm-mode channel uses it; ``answers`` are the
    frames RabbitMQ sends while the client waits (``_flush_output``), ``early`` the ones
    it sends while a message is being written."""

    def __init__(self) -> None:
        self._impl = Impl()
        self.is_open = True
        self.written: list[str] = []
        self.answers: list[Any] = []
        self.early: dict[int, list[Any]] = {}
        self.waits = 0

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        self.written.append(routing_key)
        for method in self.early.pop(len(self.written), []):
            self._confirm(method)

    def _flush_output(self, *waiters: Callable[[], bool]) -> None:
        self.waits += 1
        while not any(w() for w in waiters):
            assert self.answers, "waited for a confirm RabbitMQ never sends"
            self._confirm(self.answers.pop(0))

    def _confirm(self, method: Any) -> None:
        assert self._impl.on_confirm is not None
        self._impl.on_confirm(pika.frame.Method(1, method))


def ack(tag: int, multiple: bool = False) -> Any:
    return pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple)


def nack(tag: int, multiple: bool = False) -> Any:
    return pika.spec.Basic.Nack(delivery_tag=tag, multiple=multiple)


def publish(channel: ConfirmedChannel, n: int) -> None:
    for i in range(n):
        channel.publish(f"q{i}", b"{}", pika.BasicProperties(delivery_mode=2))


def test_one_multiple_ack_settles_the_batch_and_a_settled_batch_needs_no_wait() -> None:
    raw = Channel()
    channel = ConfirmedChannel(raw)
    assert raw._impl.selected == 1
    publish(channel, 5)
    raw.answers = [ack(5, multiple=True)]
    channel.settle()
    assert raw.written == [f"q{i}" for i in range(5)]
    waits = raw.waits
    channel.settle()  # nothing outstanding: no round trip
    assert raw.waits == waits


def test_single_acks_out_of_order_settle_only_when_all_came() -> None:
    raw = Channel()
    channel = ConfirmedChannel(raw)
    publish(channel, 3)
    raw.answers = [ack(2), ack(3)]
    with pytest.raises(AssertionError, match="never sends"):
        channel.settle()  # tag 1 is still outstanding
    raw.answers = [ack(1)]
    channel.settle()


def test_a_confirm_that_arrives_while_its_message_is_written_counts() -> None:
    raw = Channel()
    channel = ConfirmedChannel(raw)
    raw.early = {1: [ack(1)], 2: [ack(2)]}  # read by the write of each message itself
    publish(channel, 2)
    waits = raw.waits
    channel.settle()
    assert raw.waits == waits


def test_tags_go_on_across_batches_on_one_channel() -> None:
    raw = Channel()
    channel = ConfirmedChannel(raw)
    publish(channel, 2)
    raw.answers = [ack(2, multiple=True)]
    channel.settle()
    publish(channel, 2)
    raw.answers = [ack(3), ack(4)]
    channel.settle()


def test_a_nack_fails_the_settle_as_a_broker_failure_and_the_next_batch_starts_clean() -> None:
    raw = Channel()
    channel = ConfirmedChannel(raw)
    publish(channel, 3)
    raw.answers = [ack(1), nack(3, multiple=True)]
    with pytest.raises(pika.exceptions.NackError) as caught:
        channel.settle()
    assert is_broker_failure(caught.value)  # the sender sends the batch again
    publish(channel, 1)
    raw.answers = [ack(4)]
    channel.settle()
