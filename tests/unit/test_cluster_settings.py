"""Several broker URLs and quorum queues: parsing, masking, the per-process order, the
queue arguments, and the combinations refused with a clear error (no broker needed)."""

from __future__ import annotations

import argparse
import inspect
from collections import Counter
from typing import Any

import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

import flowkit
from flowkit.cli.main import build_parser
from flowkit.config import Settings, broker_urls, check_queue_type, mask_url, url_passwords
from flowkit.errors import BrokerError, ConfigurationError
from flowkit.runtime.amqp import connect, describe, queue_type_mismatch
from flowkit.runtime.brokers import create_broker, node_order
from flowkit.runtime.quorum import QueueTypes, queue_arguments

A = "amqp://guest:s3cret-a@10.0.0.1:5672/v"
B = "amqp://guest:s3cret-b@10.0.0.2:5672/v"
C = "amqp://guest:s3cret-c@10.0.0.3:5672/v"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWKIT_BROKER_URL", "FLOWKIT_QUEUE_TYPE", "FLOWKIT_BROKER_SHUFFLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLOWKIT_DATABASE_URL", "sqlite:///unused.db")


# -- several URLs ---------------------------------------------------------------
def test_a_list_or_a_semicolon_string_name_the_same_nodes() -> None:
    assert broker_urls(f"{A};{B}; {C} ;") == [A, B, C]
    assert broker_urls([A, f"{B};{C}"]) == [A, B, C]
    assert Settings.resolve([A, B]).broker_url == f"{A};{B}"
    assert Settings.resolve(f"{A} ; {B}").broker_url == f"{A};{B}"


def test_the_environment_takes_several_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_BROKER_URL", f"{A};{B}")
    assert broker_urls(Settings.resolve().broker_url) == [A, B]


def test_each_password_of_a_list_is_masked_and_known_as_a_secret() -> None:
    masked = mask_url(f"{A};{B}")
    assert masked == "amqp://guest:***@10.0.0.1:5672/v;amqp://guest:***@10.0.0.2:5672/v"
    assert set(url_passwords(f"{A};{B}")) == {"s3cret-a", "s3cret-b"}
    s = Settings.resolve([A, B, C])
    assert {"s3cret-a", "s3cret-b", "s3cret-c"} <= set(s.secrets())
    assert "s3cret" not in repr(s)
    app = flowkit.App("several", broker_url=[A, B], database_url="sqlite:///unused.db")
    assert "s3cret" not in app.describe()
    assert "10.0.0.2" in app.describe()


def test_a_bad_url_in_a_list_is_named_and_memory_is_never_one_of_several() -> None:
    with pytest.raises(ConfigurationError, match=r"'redis://h/' is not supported"):
        Settings.resolve(f"{A};redis://h/")
    with pytest.raises(ConfigurationError, match="memory:// is in-process"):
        Settings.resolve(f"memory://;{A}")


def test_the_cli_joins_a_repeated_broker_url() -> None:
    args = build_parser().parse_args(["status", "--broker-url", A, "--broker-url", B])
    assert args.broker_url == f"{A};{B}"
    args = build_parser().parse_args(["status", "--broker-url", f"{A};{B}"])
    assert args.broker_url == f"{A};{B}"
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_each_process_shuffles_the_nodes_once_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    firsts = Counter(node_order(f"{A};{B};{C}")[0] for _ in range(300))
    assert set(firsts) == {A, B, C}  # each node comes first for some processes
    assert all(sorted(node_order(f"{A};{B};{C}")) == sorted([A, B, C]) for _ in range(10))
    monkeypatch.setenv("FLOWKIT_BROKER_SHUFFLE", "0")
    assert node_order(f"{A};{B};{C}") == [A, B, C]


def test_the_broker_gets_every_node_as_pika_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_BROKER_SHUFFLE", "0")
    broker: Any = create_broker(f"{A};{B}")
    assert [(p.host, p.port) for p in broker.parameters] == [("10.0.0.1", 5672), ("10.0.0.2", 5672)]
    names = {p.client_properties["connection_name"] for p in broker.parameters}
    assert len(names) == 1 and next(iter(names)).startswith("flowkit ")
    single: Any = create_broker(A)
    assert isinstance(single.parameters, pika.URLParameters)


# -- queue types -------------------------------------------------------------------
def test_queue_type_comes_from_the_app_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings.resolve(A).queue_type == "classic"
    monkeypatch.setenv("FLOWKIT_QUEUE_TYPE", "Quorum")
    assert Settings.resolve(A).queue_type == "quorum"
    assert Settings.resolve(A, queue_type="classic").queue_type == "classic"
    monkeypatch.setenv("FLOWKIT_QUEUE_TYPE", "stream")
    with pytest.raises(ConfigurationError, match=r"FLOWKIT_QUEUE_TYPE='stream' is not supported"):
        Settings.resolve(A)
    assert flowkit.App("q", broker_url=A, queue_type="quorum").settings.queue_type == "quorum"


def test_quorum_arguments_on_all_three_queues_and_no_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker: Any = create_broker(A, queue_type="quorum")
    assert isinstance(broker, QueueTypes) and isinstance(broker, RabbitmqBroker)
    main = broker._build_queue_arguments("fk.a")
    assert main["x-queue-type"] == "quorum"
    assert main["x-dead-letter-routing-key"] == "fk.a.XQ"
    assert "x-max-priority" not in main and "x-delivery-limit" not in main
    declared: dict[str, dict[str, Any]] = {}

    class Channel:
        def queue_declare(self, queue: str, durable: bool, arguments: dict[str, Any]) -> None:
            assert durable
            declared[queue] = arguments

    monkeypatch.setattr(type(broker), "channel", property(lambda self: Channel()))
    broker._declare_queue("fk.a")
    broker._declare_dq_queue("fk.a")
    broker._declare_xq_queue("fk.a")
    assert set(declared) == {"fk.a", "fk.a.DQ", "fk.a.XQ"}
    assert all(args["x-queue-type"] == "quorum" for args in declared.values())
    assert declared["fk.a.XQ"]["x-message-ttl"] > 0  # the dead letters still expire
    assert not any("x-delivery-limit" in args for args in declared.values())


def test_classic_queues_keep_dramatiqs_arguments() -> None:
    classic: Any = create_broker(A, max_priority=5)
    assert classic._build_queue_arguments("q") == RabbitmqBroker(
        url=A, max_priority=5
    )._build_queue_arguments("q")
    assert queue_arguments({"x-max-priority": 5}, "classic") == {"x-max-priority": 5}


def test_the_methods_extended_exist_in_dramatiqs_broker() -> None:
    # The pinned Dramatiq range (pyproject.toml) keeps these; a release that renames
    # one would silently declare classic queues again.
    for name in ("_build_queue_arguments", "_declare_queue", "_declare_dq_queue"):
        assert list(inspect.signature(getattr(RabbitmqBroker, name)).parameters) == [
            "self",
            "queue_name",
        ]
    assert list(inspect.signature(RabbitmqBroker._declare_xq_queue).parameters) == [
        "self",
        "queue_name",
    ]


def test_quorum_queues_with_priorities_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigurationError, match="cannot be used with quorum queues"):
        flowkit.App("qp", broker_url=A, queue_type="quorum", max_priority=5)
    with pytest.raises(ConfigurationError, match="no message priorities"):
        check_queue_type("quorum", 3)
    check_queue_type("classic", 3)
    check_queue_type("quorum", None)
    monkeypatch.setenv("FLOWKIT_QUEUE_TYPE", "quorum")
    app = flowkit.App("qp-env", broker_url=A, database_url="sqlite:///unused.db", max_priority=5)
    with pytest.raises(ConfigurationError, match="cannot be used with quorum queues"):
        create_broker(app.settings.broker_url, max_priority=5, queue_type=app.settings.queue_type)


# -- a queue of another type ---------------------------------------------------------
def _refusal(received: str, current: str) -> pika.exceptions.ChannelClosedByBroker:
    return pika.exceptions.ChannelClosedByBroker(
        406,
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'fk.a.DQ' in vhost "
        f"'prod': received {received} but current is {current}",
    )


def test_a_classic_queue_declared_as_quorum_is_reported_with_how_to_migrate() -> None:
    err = queue_type_mismatch(_refusal("the value 'quorum' of type 'longstr'", "none"), "quorum")
    assert isinstance(err, BrokerError)
    words = str(err)
    assert "refused to declare queue 'fk.a.DQ' (vhost 'prod') as a quorum queue" in words
    assert "it exists as a classic queue" in words
    assert "drain fk.a and fk.a.DQ" in words
    assert "delete fk.a, fk.a.DQ and fk.a.XQ (rabbitmqctl delete_queue -p prod NAME)" in words
    assert "new vhost" in words


def test_the_reverse_mismatch_and_other_refusals() -> None:
    back = _refusal("none", "the value 'quorum' of type 'longstr'")
    assert "as a classic queue: it exists as a quorum queue" in describe(back, A)
    other = pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION_FAILED - inequivalent arg")
    assert queue_type_mismatch(other) is None
    assert queue_type_mismatch(ValueError("x")) is None


def test_a_connection_tries_every_node_and_names_them_masked() -> None:
    down = "amqp://guest:pw-one@127.0.0.1:1/;amqp://guest:pw-two@127.0.0.1:2/"
    with pytest.raises(BrokerError) as info:
        connect(down, timeout=2)
    words = str(info.value)
    assert "127.0.0.1:1/" in words and "127.0.0.1:2/" in words
    assert "pw-one" not in words and "pw-two" not in words
    assert "connection refused" in words
