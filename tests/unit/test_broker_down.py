"""A broker that cannot be used gets one line: the cause in words, the masked URL, exit 6.

No RabbitMQ is needed here: the failures are real ones against local ports (closed,
silent, closing every connection, not speaking TLS) and an unknown host. The
refused password and the unknown vhost, which need the real RabbitMQ, are in
``tests/integration/test_broker_down_rabbitmq.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from broker_cases import (
    CLASS_NAMES,
    COMMANDS,
    FLOWS,
    Gate,
    Lines,
    check_one_line,
    health_line,
    no_run_stored,
    run,
    seed,
    start_scheduler,
)

from flowkit.errors import BrokerError, ConfigurationError
from flowkit.runtime.amqp import connect, describe
from flowkit.runtime.backoff import BrokerOutage, retry_seconds
from flowkit.runtime.brokers import create_broker
from flowkit.runtime.publisher import Outgoing, RunRef, publisher_for

CLOSED = "amqp://guest:s3cret@127.0.0.1:1/"
MASKED = "amqp://guest:***@127.0.0.1:1/"


# -- the translation, on real failures -------------------------------------------------
@contextlib.contextmanager
def _listener(on_accept: Any) -> Iterator[int]:
    """A local port whose connections get ``on_accept(conn)``; yields the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                held.append(conn)
                on_accept(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for conn in held:
            conn.close()


def _failure(url: str) -> str:
    with pytest.raises(BrokerError) as caught:
        connect(url, timeout=0.5).close()
    return str(caught.value)


def _assert_words(message: str, masked: str, *words: str) -> None:
    assert message.startswith(f"RabbitMQ at {masked} "), message
    for word in words:
        assert word in message, (word, message)
    assert "s3cret" not in message
    assert "(FLOWKIT_BROKER_URL / --broker-url)" in message
    assert not CLASS_NAMES.search(message), message


def test_a_closed_port_is_connection_refused() -> None:
    message = _failure(CLOSED)
    _assert_words(message, MASKED, "is unreachable: connection refused", "is RabbitMQ running")


def test_an_unknown_host_is_host_not_found() -> None:
    message = _failure("amqp://guest:s3cret@no-such-host.invalid:5672/")
    _assert_words(
        message, "amqp://guest:***@no-such-host.invalid:5672/", "host 'no-such-host.invalid'"
    )
    assert "not found" in message or "name resolution" in message


def test_a_port_that_never_answers_is_a_timeout() -> None:
    with _listener(lambda conn: None) as port:
        message = _failure(f"amqp://guest:s3cret@127.0.0.1:{port}/")
    _assert_words(message, f"amqp://guest:***@127.0.0.1:{port}/", "the connection timed out")


def test_a_port_that_hangs_up_is_not_rabbitmq() -> None:
    with _listener(lambda conn: conn.close()) as port:
        message = _failure(f"amqp://guest:s3cret@127.0.0.1:{port}/")
    _assert_words(
        message, f"amqp://guest:***@127.0.0.1:{port}/", "closed the connection during the handshake"
    )


def test_amqps_to_a_plain_port_is_a_tls_failure() -> None:
    with _listener(lambda conn: conn.sendall(b"AMQP\x00\x00\x09\x01" * 64)) as port:
        message = _failure(f"amqps://guest:s3cret@127.0.0.1:{port}/")
    _assert_words(message, f"amqps://guest:***@127.0.0.1:{port}/", "the TLS handshake failed")


def test_dramatiqs_wrapper_is_seen_through() -> None:
    with pytest.raises(BrokerError) as caught:
        connect(CLOSED, timeout=0.5)
    wrapped = dramatiq.errors.ConnectionClosed(caught.value.__cause__)
    assert describe(wrapped, CLOSED) == str(caught.value)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            lambda e: e.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker forced shutdown"),
            "closed the connection: broker forced shutdown",
        ),
        (
            # a 403 on a channel is a permission, not the login
            lambda e: e.ChannelClosedByBroker(403, "ACCESS_REFUSED - access to queue 'q' refused"),
            "refused the operation: access to queue 'q' refused",
        ),
        (lambda e: e.StreamLostError("Transport indicated EOF"), "closed the connection"),
        (lambda e: e.UnroutableError([]), "could not route a message to its queue"),
        (lambda e: e.NackError([]), "did not accept a message"),
    ],
)
def test_what_rabbitmq_does_on_an_open_connection_is_in_words(error: Any, words: str) -> None:
    import pika

    message = describe(dramatiq.errors.ConnectionClosed(error(pika.exceptions)), CLOSED)
    _assert_words(message, MASKED, words)


def test_a_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"amqp://guest:\*\*\*@127.0.0.1:port/ is not"):
        connect("amqp://guest:s3cret@127.0.0.1:port/")


# -- the publisher ------------------------------------------------------------------------
def test_the_publisher_checks_first_and_says_a_stored_run_is_recovered() -> None:
    publisher = publisher_for(create_broker(CLOSED), url=CLOSED)
    with pytest.raises(BrokerError) as ready:
        publisher.ready()
    _assert_words(str(ready.value), MASKED, "connection refused")
    # A publish that fails after the commit (RabbitMQ went away in between):
    with pytest.raises(BrokerError) as late:
        publisher.publish(RunRef("cli-orders", "r-1"), [Outgoing("s-1", "price", "cli.price")])
    message = str(late.value)
    assert message.startswith("run r-1 is stored but its step(s) price could not be published")
    assert f"RabbitMQ at {MASKED} is unreachable: connection refused" in message
    assert "`flowkit recover` publishes them" in message
    assert not CLASS_NAMES.search(message), message


# -- the backoff --------------------------------------------------------------------------
def test_an_outage_is_logged_once_each_way_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    log = logging.getLogger("flowkit.test.outage")
    outage = BrokerOutage(log, "RabbitMQ at X", base=1.0, clock=lambda: now[0], jitter=lambda: 1.0)
    caplog.set_level(logging.INFO, logger=log.name)
    waits = [outage.failed(BrokerError(f"RabbitMQ at X is unreachable ({i})")) for i in range(8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert outage.down and outage.remaining() == 30.0
    now[0] += 42
    outage.recovered()
    outage.recovered()  # already up: says nothing
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "RabbitMQ at X is unreachable (0); retrying with backoff (1s doubling to 30s) "
            "until it is back",
        ),
        ("INFO", "RabbitMQ at X is reachable again after 42 s (8 failed tries)"),
    ]
    assert not outage.down and outage.remaining() == 0.0


def test_the_jitter_keeps_at_least_half_of_each_wait() -> None:
    outage = BrokerOutage(logging.getLogger("x"), "x", base=2.0, jitter=lambda: 0.0)
    assert [outage.failed(BrokerError("down")) for _ in range(3)] == [1.0, 2.0, 4.0]


def test_the_retry_base_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWKIT_BROKER_RETRY_SECONDS", raising=False)
    assert retry_seconds() == 1.0
    monkeypatch.setenv("FLOWKIT_BROKER_RETRY_SECONDS", "0.25")
    assert retry_seconds() == 0.25
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("FLOWKIT_BROKER_RETRY_SECONDS", bad)
        with pytest.raises(ConfigurationError, match="FLOWKIT_BROKER_RETRY_SECONDS"):
            retry_seconds()


# -- every command, with the broker at a closed port -------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], dict[str, str]]:
    tmp = tmp_path_factory.mktemp("broker-down")
    env, ids = seed(tmp)
    return tmp, {**env, "FLOWKIT_BROKER_URL": CLOSED}, ids


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_says_the_broker_is_down_in_one_line(
    command: str, seeded: tuple[Path, dict[str, str], dict[str, str]]
) -> None:
    tmp, env, ids = seeded
    before = run(["runs", "list", "--json"], env, tmp).stdout
    result = run(COMMANDS[command](ids), env, tmp)
    check_one_line(result, MASKED, "is unreachable: connection refused", "is RabbitMQ running")
    no_run_stored(env, tmp, before)


def test_health_names_the_cause(seeded: tuple[Path, dict[str, str], dict[str, str]]) -> None:
    tmp, env, _ = seeded
    result = run(["health", "--app", f"{FLOWS}:app"], env, tmp)
    health_line(result, MASKED, "FAILED", "connection refused")


def test_cancel_needs_only_the_database(
    seeded: tuple[Path, dict[str, str], dict[str, str]],
) -> None:
    tmp, env, _ = seeded
    memory = {**env, "FLOWKIT_BROKER_URL": "memory://"}
    run_id = run(
        ["submit", "--app", f"{FLOWS}:pipeline", "--data", '{"tenant_id": "c", "amount": 1}'],
        memory,
        tmp,
    ).stdout.split()[0]
    result = run(["cancel", run_id], env, tmp)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == f"run {run_id} cancelled"


def test_the_scheduler_warns_once_and_retries_quietly(
    seeded: tuple[Path, dict[str, str], dict[str, str]],
) -> None:
    tmp, env, _ = seeded
    gate = Gate()
    url = f"amqp://guest:s3cret@127.0.0.1:{gate.port}/"
    proc = start_scheduler(env, tmp, url)
    lines = Lines(proc.stderr)
    try:
        warning = lines.wait_for(r" WARNING ", timeout=60)
        gate.open()  # now each retry connects, and is hung up on
        assert gate.wait_accepted(4, timeout=30), gate.accepted
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        gate.close()
    rest = lines.rest()
    assert code == 0, rest
    assert (
        f"RabbitMQ at amqp://guest:***@127.0.0.1:{gate.port}/ is unreachable: connection refused"
        in warning
    )
    assert [ln for ln in rest if " WARNING " in ln or " ERROR " in ln] == [warning]
    assert not any("Traceback" in ln or CLASS_NAMES.search(ln) for ln in rest), rest
    assert "s3cret" not in "\n".join(rest)
    # Backoff: each wait at least as long as the one before (equal jitter on doubling).
    gaps = [b - a for a, b in itertools.pairwise(gate.accepted)]
    assert all(later >= earlier * 0.9 for earlier, later in itertools.pairwise(gaps)), gaps
