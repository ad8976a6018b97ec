"""The publisher thread on a fake RabbitMQ broker: hand-over, group commit, outages, close.

The fake stands where Dramatiq's ``RabbitmqBroker`` does (a connection per thread,
queue declarations, middleware hooks) with a channel whose confirms the test
holds or fails, so every behaviour is driven by events, not by timing. The real
RabbitMQ is in ``tests/integration/test_publisher_rabbitmq.py``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pika
import pytest

from flowkit.errors import BrokerError
from flowkit.runtime import connections
from flowkit.runtime.sender import Sender

URL = "amqp://guest:s3cret@127.0.0.1:5672/"
MASKED = "amqp://guest:***@127.0.0.1:5672/"
WAIT = 10.0  # the bound of every wait below; none should come near it


class FakeImpl:
    """The asynchronous channel under a blocking one: where confirm mode is turned on."""

    def __init__(self) -> None:
        self.on_confirm: Callable[[Any], None] | None = None

    def confirm_delivery(self, ack_nack_callback: Callable[[Any], None], callback: Any) -> None:
        self.on_confirm = ack_nack_callback
        callback(None)  # confirm.select-ok


class FakeChannel:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.is_open = True
        self.written: list[tuple[str, bytes]] = []
        self._impl = FakeImpl()
        self.tags = 0

    def basic_publish(self, exchange: str, routing_key: str, body: bytes, properties: Any) -> None:
        if routing_key in self.broker.refused_queues:
            self.is_open = False
            raise pika.exceptions.ChannelClosedByBroker(403, f"ACCESS_REFUSED - {routing_key}")
        self.written.append((routing_key, body))
        self.tags += 1

    def _flush_output(self, *waiters: Callable[[], bool]) -> None:
        """pika's wait for I/O until a waiter is ready: here, the batch's confirms."""
        if any(w() for w in waiters):
            return
        b = self.broker
        b.commit_started.set()
        assert b.release.wait(WAIT), "the test never released the confirms"
        if b.fail_commits:
            b.fail_commits -= 1
            self.written.clear()
            raise pika.exceptions.StreamLostError(
                "Stream connection lost: ConnectionResetError(104)"
            )
        with b.lock:
            b.commits.append(len(self.written))
            b.published.extend(self.written)
            b.settled.notify_all()
        self.written.clear()
        assert self._impl.on_confirm is not None
        ack = pika.spec.Basic.Ack(delivery_tag=self.tags, multiple=True)
        self._impl.on_confirm(pika.frame.Method(1, ack))


class FakeConnection:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.is_open = True
        self.polls = 0

    def channel(self) -> FakeChannel:
        return FakeChannel(self.broker)

    def process_data_events(self, time_limit: float) -> None:
        self.polls += 1
        self.broker.polled.set()

    def close(self) -> None:
        self.is_open = False


class FakeBroker:
    """What the sender uses of Dramatiq's RabbitmqBroker, with switches for the test."""

    def __init__(self) -> None:
        self.state = threading.local()
        self.queues_pending: set[str] = set()
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)
        self.published: list[tuple[str, bytes]] = []
        self.commits: list[int] = []
        self.enqueued: list[tuple[str, str]] = []  # (hook, message id)
        self.release = threading.Event()
        self.release.set()
        self.commit_started = threading.Event()
        self.polled = threading.Event()
        self.down = False  # connecting is refused
        self.connects = 0
        self.fail_commits = 0
        self.refused_queues: set[str] = set()
        self.made: list[FakeConnection] = []
        self.refused = threading.Event()

    @property
    def connection(self) -> FakeConnection:
        conn = getattr(self.state, "connection", None)
        if conn is None:
            with self.lock:
                self.connects += 1
                self.settled.notify_all()
            if self.down:
                self.refused.set()
                raise ConnectionRefusedError(111, "Connection refused")
            conn = self.state.connection = FakeConnection(self)
            self.made.append(conn)
        return conn

    @connection.deleter
    def connection(self) -> None:
        conn = getattr(self.state, "connection", None)
        if conn is not None:
            del self.state.connection
            conn.close()

    def declare_queue(self, name: str, *, ensure: bool = False) -> None:
        self.queues_pending.discard(name)

    def emit_before(self, hook: str, message: Any, delay: Any) -> None:
        self.enqueued.append((f"before_{hook}", message.message_id))

    def emit_after(self, hook: str, message: Any, delay: Any) -> None:
        self.enqueued.append((f"after_{hook}", message.message_id))

    def wait_connects(self, n: int) -> None:
        """Until ``n`` connection attempts were made (and the one before it has failed)."""
        with self.settled:
            assert self.settled.wait_for(lambda: self.connects >= n, WAIT), self.connects

    def wait_published(self, n: int) -> list[tuple[str, bytes]]:
        with self.settled:
            assert self.settled.wait_for(lambda: len(self.published) >= n, WAIT), self.published
            return list(self.published)


def message(queue: str = "q.a", n: int = 0) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue, actor_name="f.a", args=(), kwargs={"n": n}, options={}
    )


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def make(broker: FakeBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Sender]]:
    monkeypatch.setenv("FLOWKIT_BROKER_RETRY_SECONDS", "0.05")
    made: list[Sender] = []

    def build(**kwargs: Any) -> Sender:
        made.append(Sender(broker, URL, **kwargs))
        return made[-1]

    yield build
    broker.release.set()
    for s in made:
        s.close(timeout=1)


def test_put_returns_before_the_round_trip_and_waiting_messages_share_the_next(
    broker: FakeBroker, make: Callable[..., Sender]
) -> None:
    sender = make()
    sender.ready()
    broker.release.clear()  # RabbitMQ is slow to settle
    sender.put([(message(n=0), None)])
    assert broker.commit_started.wait(WAIT)  # in flight, and put() has returned
    threads = [
        threading.Thread(target=sender.put, args=([(message(n=i), None)],)) for i in range(1, 41)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not sender.flush(timeout=0.01)  # nothing more is settled while the first waits
    broker.release.set()
    assert sender.flush(timeout=WAIT)
    assert len(broker.published) == 41
    assert broker.commits[0] == 1 and sum(broker.commits) == 41
    assert len(broker.commits) <= 3  # 40 concurrent publishes shared one or two round trips
    # Dramatiq's middleware saw each message, before and after it was written.
    assert len(broker.enqueued) == 82
    assert {h for h, _ in broker.enqueued} == {"before_enqueue", "after_enqueue"}


def test_a_delay_is_counted_from_the_hand_over(
    broker: FakeBroker, make: Callable[..., Sender]
) -> None:
    sender = make()
    m = message()
    sender.put([(m, 60_000)])
    ((queue, body),) = broker.wait_published(1)
    assert queue == "q.a.DQ"
    eta = dramatiq.get_encoder().decode(body)["options"]["eta"]
    assert abs(eta - (m.message_timestamp + 60_000)) < 5_000


def test_ready_raises_at_once_in_words_when_rabbitmq_is_down(
    broker: FakeBroker, make: Callable[..., Sender]
) -> None:
    broker.down = True
    sender = make()
    for tries in (1, 2, 3):  # nothing held: each ready() waits for one attempt
        with pytest.raises(BrokerError) as caught:
            sender.ready()
        assert broker.connects == tries
    text = str(caught.value)
    assert text.startswith(f"RabbitMQ at {MASKED} is unreachable: connection refused")
    assert "s3cret" not in text


def test_while_it_holds_messages_ready_and_put_raise_at_once_and_keep_them(
    broker: FakeBroker, make: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowkit.broker")
    broker.down = True
    sender = make()
    with pytest.raises(BrokerError):
        sender.ready()
    with pytest.raises(BrokerError, match="connection refused"):
        sender.put([(message(n=1), None)])  # the last attempt just failed
    with pytest.raises(BrokerError, match="connection refused"):
        sender.put([(message(n=2), None)])  # and it holds one
    with pytest.raises(BrokerError, match="connection refused"):
        sender.ready()
    broker.wait_connects(3)  # it tried them (and failed: said once), and tries again...
    broker.down = False  # ... and RabbitMQ is back: a later try (backoff from 0.05 s) sends both
    assert sender.flush(timeout=WAIT)
    assert len(broker.published) == 2
    sender.ready()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    warnings = [m for lvl, m in lines if lvl == "WARNING"]
    assert len(warnings) == 1 and "message(s) wait to be published" in warnings[0], lines
    assert any("is reachable again" in m for lvl, m in lines if lvl == "INFO"), lines


def test_a_connection_lost_under_a_batch_costs_one_line_and_the_batch_goes_out(
    broker: FakeBroker, make: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowkit.broker")
    sender = make()
    sender.ready()
    broker.fail_commits = 1
    sender.put([(message(n=i), None) for i in range(3)])
    assert sender.flush(timeout=WAIT)
    assert len(broker.published) == 3
    lines = [r.getMessage() for r in caplog.records if "publishing connection" in r.getMessage()]
    assert len(lines) == 1 and "StreamLostError" in lines[0] and "reconnecting" in lines[0]
    sender.ready()  # never known down: the second try worked


def test_a_queue_refused_on_the_channel_drops_only_its_message(
    broker: FakeBroker, make: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    broker.refused_queues = {"q.bad"}
    sender = make()
    sender.put([(message("q.a", 1), None), (message("q.bad", 2), None), (message("q.a", 3), None)])
    assert sender.flush(timeout=WAIT)
    assert [q for q, _ in broker.published] == ["q.a", "q.a"]
    refused = [r for r in caplog.records if "refused a message for queue q.bad" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelname == "WARNING"
    sender.ready()  # RabbitMQ is up: one refusal does not make it "down"


def test_beyond_the_bound_new_messages_are_dropped_with_one_warning(
    broker: FakeBroker, make: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    sender = make(limit=5)
    sender.ready()
    broker.release.clear()
    sender.put([(message(n=0), None)])
    assert broker.commit_started.wait(WAIT)
    for i in range(1, 10):
        sender.put([(message(n=i), None)])
    broker.release.set()
    assert sender.flush(timeout=WAIT)
    assert len(broker.published) == 5
    dropped = [r.getMessage() for r in caplog.records if "dropping new ones" in r.getMessage()]
    assert len(dropped) == 1 and "recovery sweep" in dropped[0]


def test_close_flushes_what_is_pending(broker: FakeBroker, make: Callable[..., Sender]) -> None:
    sender = make()
    sender.put([(message(n=i), None) for i in range(700)])  # two batches (500 + 200)
    sender.close(timeout=WAIT)
    assert len(broker.published) == 700
    assert broker.commits == [500, 200]
    assert getattr(broker.state, "connection", None) is None  # its thread closed its own


def test_close_is_bounded_and_says_what_it_left(
    broker: FakeBroker, make: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    sender = make()
    sender.ready()
    broker.release.clear()  # RabbitMQ never settles
    sender.put([(message(n=i), None) for i in range(3)])
    assert broker.commit_started.wait(WAIT)
    sender.close(timeout=0.2)
    left = [r.getMessage() for r in caplog.records if "not published before" in r.getMessage()]
    assert left and left[0].startswith("3 message(s) were not published"), left


def test_close_while_down_tries_once_more_then_gives_up(
    broker: FakeBroker, make: Callable[..., Sender], caplog: pytest.LogCaptureFixture
) -> None:
    broker.down = True
    sender = make()
    with pytest.raises(BrokerError):
        sender.ready()
    with pytest.raises(BrokerError):
        sender.put([(message(), None)])
    before = broker.connects
    sender.close(timeout=WAIT)  # returns after one more failed try, not after WAIT
    assert broker.connects == before + 1
    assert any("connection refused" in r.getMessage() for r in caplog.records)


def test_an_idle_connection_is_polled_and_one_found_closed_is_reopened(
    broker: FakeBroker, make: Callable[..., Sender]
) -> None:
    sender = make()
    sender.ready()
    assert broker.polled.wait(WAIT)  # a second without work: one non-blocking poll
    assert broker.connects == 1
    broker.down = True
    broker.made[-1].is_open = False  # RabbitMQ closes the idle connection
    # Nobody publishes: the next poll notices, and reopening it is refused...
    assert broker.refused.wait(WAIT)
    # ... so ready() says so (after one attempt of its own: nothing is held).
    with pytest.raises(BrokerError, match="connection refused"):
        sender.ready()


def test_probe_leaves_a_connection_used_within_a_second_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = FakeBroker()
    conn = broker.connection
    quiet = []
    monkeypatch.setattr(connections, "quiet_pika", _counting(quiet))
    connections._used.__dict__.clear()
    connections.probe(broker)  # first use on this thread: polled
    for _ in range(100):
        connections.probe(broker)  # the hot path: no poll, pika's logger untouched
    assert conn.polls == 1 and len(quiet) == 1


def _counting(calls: list[int]) -> Any:
    @contextlib.contextmanager
    def quiet() -> Iterator[None]:
        calls.append(1)
        yield

    return quiet
