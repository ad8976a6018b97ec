"""The smaller recovery gaps of issue 14, each where it lives (memory broker, SQLite).

A message naming no stored step, or with arguments that are not a step's, is
kept as a dead letter with its reason; an undecodable body is recorded with
its queue; each dead letter costs one WARNING line; a step's output is held to
the payload limits; a ``Stop``'s secret output is stored like a normal
output's; a worker thread told to stop hands its message back; RabbitMQ
connections are named.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import DecodeError
from pydantic import BaseModel, SecretStr

import flowkit
from flowkit.runtime.brokers import create_broker, name_worker_connections
from flowkit.runtime.connections import connection_name, name_connections
from flowkit.runtime.quarantine import DeadLetterRecorder, DramatiqNoise, RecordingEncoder
from flowkit.runtime.shutdown import hand_back, handing_back
from flowkit.testing import embedded


class Token(BaseModel):
    user: str
    token: SecretStr


@flowkit.stage(queue="gaps.first")
def first(n: int) -> int:
    return n + 1


@flowkit.stage(queue="gaps.big", retries=3)
def grow(n: int) -> str:
    return "x" * n


@flowkit.stage(queue="gaps.deep", retries=3)
def nest(n: int) -> Any:
    value: Any = 0
    for _ in range(n):
        value = [value]
    return value


@flowkit.stage(queue="gaps.stop")
def stop_with_secret(user: str) -> int | flowkit.Stop:
    return flowkit.Stop(Token(user=user, token=SecretStr("tok-" + user)), reason="enough")


plain = flowkit.Pipeline("gaps-plain", [first])
grows = flowkit.Pipeline("gaps-grow", [grow])
nests = flowkit.Pipeline("gaps-nest", [nest])
stops = flowkit.Pipeline("gaps-stop", [stop_with_secret])
app = flowkit.App(
    "gaps", flows=[plain, grows, nests, stops], max_payload_bytes=2_000, max_payload_depth=10
)


@pytest.fixture(autouse=True)
def _restore_encoder() -> Iterator[None]:
    """Dramatiq's encoder is process-wide: leave it as this test found it."""
    before = dramatiq.get_encoder()
    saved = (getattr(before, "policy", None), getattr(before, "recorder", None))
    yield
    dramatiq.set_encoder(before)
    if isinstance(before, RecordingEncoder):
        before.policy, before.recorder = saved  # type: ignore[assignment]


@pytest.fixture
def gaps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[flowkit.App]:
    for name in ("FLOWKIT_MAX_PAYLOAD_BYTES", "FLOWKIT_MAX_PAYLOAD_DEPTH"):
        monkeypatch.delenv(name, raising=False)
    with embedded(app, tmp_path) as a:
        yield a


def deliver(a: flowkit.App, **kwargs: Any) -> None:
    """One message straight to ``gaps-plain.first``'s queue, handled by the worker."""
    a.start_worker()
    a.broker.enqueue(
        dramatiq.Message(
            queue_name="gaps.first",
            actor_name="gaps-plain.first",
            args=(),
            kwargs=kwargs,
            options={},
        )
    )
    broker = a.broker
    assert isinstance(broker, StubBroker)
    broker.join("gaps.first", timeout=10_000, fail_fast=False)


def dead_letter_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("dead letter from queue")]


# -- dead letters ----------------------------------------------------------------------------
def test_a_message_for_a_step_that_is_not_stored_is_kept_as_a_dead_letter(
    gaps: flowkit.App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    deliver(gaps, step_id="no-such-step", run_id="r-0", key=None)
    (letter,) = gaps.store.dead_letters.newest()
    assert letter.reason == "unknown step: no step 'no-such-step' is stored (run r-0)"
    assert (letter.queue, letter.step_id, letter.run_id) == ("gaps.first", "no-such-step", "r-0")
    (line,) = dead_letter_lines(caplog)
    assert line.levelno == logging.WARNING and "unknown step" in line.getMessage()
    assert not line.exc_info


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, "malformed message: step_id and run_id must be strings"),
        ({"step_id": 1, "run_id": "r"}, "malformed message: step_id and run_id must be strings"),
        ({"step_id": "s", "run_id": "r", "x": 1}, "malformed message: unexpected argument(s) x"),
        ({"step_id": "s", "run_id": "r", "key": 5}, "malformed message: key must be a string"),
    ],
)
def test_arguments_that_are_not_a_step_message_are_a_dead_letter_with_the_reason(
    gaps: flowkit.App, caplog: pytest.LogCaptureFixture, kwargs: dict[str, Any], reason: str
) -> None:
    deliver(gaps, **kwargs)
    (letter,) = gaps.store.dead_letters.newest()
    assert letter.reason == reason
    # One line says so; Dramatiq's own traceback is not logged.
    assert [r.getMessage().split(": ", 1)[1] for r in dead_letter_lines(caplog)] == [
        f"{reason} (message {letter.message_id})"
    ]
    assert not [r for r in caplog.records if r.exc_info]


def test_an_undecodable_body_is_recorded_with_the_queue_it_came_from() -> None:
    encoder = RecordingEncoder()
    letters: list[dict[str, Any]] = []
    encoder.recorder = lambda **kw: letters.append(kw)
    dramatiq.set_encoder(encoder)
    seen: list[dict[str, Any]] = []

    def consumer_thread() -> None:  # bodies are decoded on the queue's consumer thread
        DeadLetterRecorder().after_consumer_thread_boot(None, SimpleNamespace(queue_name="q.x"))
        try:
            dramatiq.Message.decode(b"not json at all")
        except DecodeError:
            seen.extend(letters)

    t = threading.Thread(target=consumer_thread)
    t.start()
    t.join(10)
    assert [(x["queue"], x["reason"]) for x in seen] == [("q.x", "undecodable message: not JSON")]


def test_dramatiqs_own_lines_about_a_dead_letter_are_demoted_to_debug() -> None:
    logger = logging.getLogger("dramatiq.worker.WorkerThread")
    record = logger.makeRecord(
        logger.name,
        logging.ERROR,
        __file__,
        1,
        "Received message for undefined actor %r. Moving it to the DLQ.",
        ("x",),
        None,
    )
    kept = DramatiqNoise().filter(record)
    assert record.levelno == logging.DEBUG
    assert kept == logger.isEnabledFor(logging.DEBUG)
    other = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "other", (), None)
    assert DramatiqNoise().filter(other) and other.levelno == logging.ERROR


# -- outputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flow", "n", "words"),
    [(grows, 5_000, "bytes of JSON, over the limit of 2,000"), (nests, 20, "more than 10 levels")],
    ids=["size", "depth"],
)
def test_an_output_over_the_payload_limits_fails_the_step_without_retries(
    gaps: flowkit.App, flow: flowkit.Pipeline, n: int, words: str
) -> None:
    run = flow.submit(n)
    with pytest.raises(flowkit.RunFailed) as failed:
        run.result(timeout=30)
    assert "PayloadTooLarge" in str(failed.value) and words in str(failed.value)
    (step,) = run.steps()
    assert step.attempts == 1  # it would not shrink on a retry
    assert step.error is not None and step.error["type"] == "PayloadTooLarge"
    assert step.output is None


def test_an_output_within_the_limits_is_stored(gaps: flowkit.App) -> None:
    assert grows.submit(100).result(timeout=30) == "x" * 100


def test_a_secret_in_a_stop_output_is_stored_with_its_value_like_a_normal_output(
    gaps: flowkit.App,
) -> None:
    run = stops.submit("ana")
    run.result(timeout=30)
    state = gaps.store.run_state(run.id)
    assert state is not None and state[1] == {"user": "ana", "token": "tok-ana"}
    (step,) = run.steps()
    assert step.output["output"]["token"] == "tok-ana"  # not "**********"


# -- a worker told to stop -------------------------------------------------------------------
class _Channel:
    def __init__(self) -> None:
        self.nacked: list[tuple[int, bool]] = []

    def basic_nack(self, tag: int, requeue: bool) -> None:
        self.nacked.append((tag, requeue))


class _Connection:
    def add_callback_threadsafe(self, fn: Any) -> None:
        fn()


def test_a_worker_thread_told_to_stop_hands_its_message_back_instead_of_running_it() -> None:
    channel = _Channel()
    consumer = SimpleNamespace(known_tags={7, 8}, connection=_Connection(), channel=channel)
    message = SimpleNamespace(queue_name="q", _tag=7, message_id="m-7")
    results: list[tuple[bool, bool]] = []

    class Thread(threading.Thread):  # what Dramatiq's WorkerThread has: running, consumers
        def __init__(self) -> None:
            super().__init__()
            self.running = True
            self.consumers = {"q": SimpleNamespace(consumer=consumer)}

        def run(self) -> None:
            results.append((hand_back(message), handing_back()))
            self.running = False  # WorkerThread.stop()
            results.append((hand_back(message), handing_back()))

    t = Thread()
    t.start()
    t.join(10)
    assert results == [(False, False), (True, True)]
    assert channel.nacked == [(7, True)] and consumer.known_tags == {8}
    assert hand_back(message) is False  # not a worker thread: runs as before


# -- connection names ------------------------------------------------------------------------
def test_rabbitmq_connections_are_named_by_worker_and_pid() -> None:
    params = pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/")
    broker = SimpleNamespace(parameters=params)
    name_connections(broker, connection_name())
    assert params.client_properties == {"connection_name": f"flowkit {os.getpid()}"}
    name_connections(broker, connection_name("w-1"))
    assert params.client_properties["connection_name"] == f"flowkit w-1 {os.getpid()}"


def test_a_rabbitmq_broker_names_its_connections_and_its_workers_after_their_id() -> None:
    broker = create_broker("amqp://guest:guest@127.0.0.1:5672/")  # connects to nothing yet
    params: Any = broker.parameters
    assert params.client_properties["connection_name"] == f"flowkit {os.getpid()}"
    name_worker_connections(broker, lambda: "w-9")
    broker.emit_before("worker_boot", None)
    assert params.client_properties["connection_name"] == f"flowkit w-9 {os.getpid()}"
