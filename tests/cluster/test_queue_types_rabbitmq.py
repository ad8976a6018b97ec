"""Quorum queues on the real RabbitMQ (the node on 5672, the session's vhost): declared as
quorum, and a queue of the other type refused at a worker's start in one clear line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from helpers import Workers, env_fixture, workers_fixture  # noqa: E402, F401 - fixtures

import flowkit  # noqa: E402
from flowkit.runtime.brokers import check_broker  # noqa: E402
from flowkit.runtime.publisher import CONTROL_QUEUE  # noqa: E402

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'cluster_flows.py'}:app"
QUEUES = ("fkc.a", "fkc.b")


def _all_queues() -> list[str]:
    """The scenario's queues, and the control queue every App declares: the session's
    vhost keeps it between tests, as a classic queue before and after these."""
    return [n for q in (*QUEUES, CONTROL_QUEUE) for n in (q, f"{q}.DQ", f"{q}.XQ")]


@pytest.fixture(name="channel")
def channel_fixture(rabbitmq_url: str) -> Iterator[Any]:
    """A channel on the session's vhost; the scenario's queues deleted before and after."""
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))

    def clean() -> None:
        ch = conn.channel()
        for name in _all_queues():
            ch.queue_delete(name)
        ch.close()

    try:
        clean()
        yield conn.channel()
    finally:
        clean()
        conn.close()


def _queue_type(rabbitmq_url: str, name: str, kind: str) -> bool:
    """Whether ``name`` exists as a ``kind`` queue (a passive declare with that type)."""
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        args = {"x-queue-type": kind} if kind == "quorum" else {}
        conn.channel().queue_declare(name, passive=True, arguments=args)
        return True
    finally:
        conn.close()


def _types(rabbitmq_url: str) -> dict[str, str]:
    """``{queue: type}`` of the session's vhost, as ``rabbitmqctl list_queues`` says."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl is needed to list the queues' types")
    vhost = unquote(urlsplit(rabbitmq_url).path[1:]) or "/"
    out = subprocess.run(
        [ctl, "list_queues", "-p", vhost, "name", "type", "--no-table-headers", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)


def test_a_quorum_app_declares_its_three_queues_as_quorum(
    rabbitmq_url: str, pg_url: str, channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    app = flowkit.App("quorum-check", flows=[], queue_type="quorum")
    app.configure(broker_url=rabbitmq_url, database_url=pg_url)
    try:
        broker: Any = app.broker
        broker.declare_queue("fkc.a")
        check_broker(broker, rabbitmq_url)  # declares the actors' queues now
    finally:
        app.close()
    types = _types(rabbitmq_url)
    assert {q: types.get(q) for q in ("fkc.a", "fkc.a.DQ", "fkc.a.XQ")} == {
        "fkc.a": "quorum",
        "fkc.a.DQ": "quorum",
        "fkc.a.XQ": "quorum",
    }


def test_a_worker_on_a_classic_queue_with_quorum_exits_with_one_line(
    rabbitmq_url: str, pg_url: str, channel: Any, workers: Workers
) -> None:
    # The queue as an older, classic deployment left it (Dramatiq's arguments).
    channel.queue_declare(
        "fkc.a",
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "fkc.a.XQ"},
    )
    workers.env["FLOWKIT_QUEUE_TYPE"] = "quorum"
    w = workers.start(TARGET, threads=1, name="mismatch")
    w.proc.wait(60)
    out = w.output()
    assert w.proc.returncode == 6, out
    assert "Traceback" not in out, out
    assert "refused to declare queue 'fkc.a'" in out, out
    assert "as a quorum queue: it exists as a classic queue" in out, out
    assert "rabbitmqctl delete_queue" in out and "new vhost" in out, out


def test_a_classic_app_on_a_quorum_queue_says_so_too(
    rabbitmq_url: str, pg_url: str, channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    quorum = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "fkc.b.XQ",
        "x-queue-type": "quorum",
    }
    channel.queue_declare("fkc.b", durable=True, arguments=quorum)  # as quorum flowkit left it
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", pg_url)
    app = flowkit.App(f"classic-{uuid.uuid4().hex[:6]}", flows=[], queue_type="classic")
    app.configure(broker_url=rabbitmq_url, database_url=pg_url)
    try:
        broker: Any = app.broker
        with pytest.raises(flowkit.BrokerError) as info:
            broker.declare_queue("fkc.b", ensure=True)
        assert "as a classic queue: it exists as a quorum queue" in str(info.value)
        broker.declare_queue("fkc.a", ensure=True)  # the channel was replaced: others work
    finally:
        app.close()
    assert _queue_type(rabbitmq_url, "fkc.b", "quorum")


def test_the_publisher_thread_skips_a_node_that_is_down(
    rabbitmq_url: str, channel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dramatiq

    from flowkit.runtime.brokers import create_broker
    from flowkit.runtime.sender import Sender

    monkeypatch.setenv("FLOWKIT_BROKER_SHUFFLE", "0")  # the dead node is tried first
    urls = f"amqp://guest:guest@127.0.0.1:1/;{rabbitmq_url}"
    broker: Any = create_broker(urls, queue_type="quorum")
    sender = Sender(broker, urls)
    try:
        sender.ready()
        message: Any = dramatiq.Message(
            queue_name="fkc.a", actor_name="take", args=(), kwargs={}, options={}
        )
        sender.put([(message, None), (message.copy(), None)])
        assert sender.flush(30)
    finally:
        sender.close()
        broker.close()
    depth = channel.queue_declare("fkc.a", passive=True).method.message_count
    assert depth == 2
    assert _types(rabbitmq_url)["fkc.a"] == "quorum"
