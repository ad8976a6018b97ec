"""The publisher thread on the real RabbitMQ: submits that do not wait, a flush at close,
and an outage known at once (through a port the test forwards to RabbitMQ, then cuts,
so the real one is never stopped).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pika
import pytest
from helpers import bound_app, query, wait_until

import flowkit

pytestmark = pytest.mark.integration

QUEUE = "pub.first"


@flowkit.stage(queue=QUEUE)
def first(n: int) -> int:
    return n


@flowkit.stage(queue="pub.second")
def second(n: int) -> int:
    return n


pipeline = flowkit.Pipeline("pub-two", [first, second])
app = flowkit.App("pub", flows=[pipeline])


def ready_count(rabbitmq_url: str, queue: str = QUEUE) -> int:
    """Ready messages in ``queue``, read on a connection of the test's own."""
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


def runs(pg_url: str) -> int:
    return int(query(pg_url, "SELECT count(*) FROM flowkit_runs")[0][0])


class Cut:
    """A local port forwarded to RabbitMQ that the test cuts (every connection reset,
    new ones refused) and restores, as RabbitMQ going away and coming back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._serve, args=(server,), daemon=True).start()

    def cut(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):  # wakes the accept() under way, so none follows
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        for s in self._open:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self._open.clear()

    def _serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def pub(pg_url: str, rabbitmq_url: str) -> Iterator[flowkit.App]:
    with bound_app(app, pg_url, rabbitmq_url) as bound:
        yield bound


def test_submits_hand_over_and_close_flushes_every_message(
    pub: flowkit.App, rabbitmq_url: str, pg_url: str
) -> None:
    threads = [
        threading.Thread(target=lambda k=k: [pipeline.submit(k * 100 + i) for i in range(50)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(100):
        pipeline.submit(1000 + i)
    pub.close()  # what the publisher thread still holds goes out before the broker closes
    assert runs(pg_url) == 300
    assert ready_count(rabbitmq_url) == 300


def test_rabbitmq_gone_is_known_at_once_and_submit_stores_nothing(
    pub: flowkit.App, rabbitmq_url: str, pg_url: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    cut = Cut((parts.hostname or "127.0.0.1", parts.port or 5672))
    cut.restore()
    pub.close()
    pub.configure(broker_url=f"amqp://guest:guest@127.0.0.1:{cut.port}{parts.path or '/'}")
    publisher = pub.engine.publisher
    pipeline.submit(1)
    assert publisher.flush(timeout=30)
    cut.cut()  # RabbitMQ goes away while the publisher is idle: its poll notices

    def refused() -> bool:
        try:
            publisher.ready()
        except flowkit.BrokerError:
            return True
        return False

    wait_until(refused, 10, interval=0.05, what="the publisher to know RabbitMQ is gone")
    began = time.monotonic()
    with pytest.raises(flowkit.BrokerError, match="is unreachable: connection refused"):
        pipeline.submit(2)
    assert time.monotonic() - began < 1.0  # at once: one refused connection, no timeout
    assert runs(pg_url) == 1  # nothing stored for the refused submit
    cut.restore()
    run = pipeline.submit(3)  # back: ready() tries again and it works
    assert publisher.flush(timeout=30)
    assert runs(pg_url) == 2 and run.id
    assert ready_count(rabbitmq_url) == 2
    cut.cut()
