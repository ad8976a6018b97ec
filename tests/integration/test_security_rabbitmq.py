"""Signed messages on RabbitMQ + PostgreSQL: a real ``flowkit worker`` with FLOWKIT_SIGNING_KEY.

Signed runs succeed; an unsigned, a forged and an oversized message published
straight to the stage's queue are dead-lettered with their reason and never
run; the worker keeps going, and its log never shows the keys or a step's secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
import pytest
from helpers import HERE, Workers, wait_until, worker_env, workers_fixture  # noqa: F401
from pydantic import BaseModel, SecretStr

import flowkit
from flowkit.runtime.quarantine import RecordingEncoder
from flowkit.runtime.wire import WirePolicy

pytestmark = pytest.mark.integration

TARGET = f"{HERE / 'test_security_rabbitmq.py'}:app"
KEY = "it-sec-key-0123456789abcdef"
OLD_KEY = "it-sec-old-0123456789abcdef"
QUEUE = "it.sec"


class Credentials(BaseModel):
    user: str
    token: SecretStr


@flowkit.stage(queue=QUEUE, retries=0)
def check(c: Credentials, ctx: flowkit.Context) -> int:
    # A careless log line: the worker's log filter masks the step's secret.
    ctx.logger.warning("checking %s with token %s", c.user, c.token.get_secret_value())
    return len(c.token.get_secret_value())


pipeline = flowkit.Pipeline("it-sec", [check])
app = flowkit.App("it-sec", flows=[pipeline])


@pytest.fixture(name="env")
def env_fixture(rabbitmq_url: str, pg_url: str) -> dict[str, str]:
    """The worker's environment: the services, the keys (new first) and a small payload limit."""
    return {
        **worker_env(rabbitmq_url, pg_url),
        "FLOWKIT_SIGNING_KEY": f"{KEY},{OLD_KEY}",
        "FLOWKIT_MAX_PAYLOAD_BYTES": "1000",  # messages still get their 64 KiB floor
    }


@pytest.fixture
def signed(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[flowkit.App]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    encoder = dramatiq.get_encoder()
    saved = getattr(encoder, "policy", None)
    app.configure(
        broker_url=env["FLOWKIT_BROKER_URL"],
        database_url=env["FLOWKIT_DATABASE_URL"],
        embedded_worker=False,
    )
    try:
        app.store  # noqa: B018 - the schema exists before the worker starts
        app.broker.flush_all()  # the vhost lives for the whole session
        yield app
    finally:
        app.close()
        if isinstance(encoder, RecordingEncoder) and saved is not None:
            encoder.policy = saved


def raw_message(**changes: Any) -> bytes:
    fields = {
        "queue_name": QUEUE,
        "actor_name": "it-sec.check",
        "args": [],
        "kwargs": {"step_id": "forged", "run_id": "forged", "key": None},
        "options": {},
        "message_id": "forged-1",
        "message_timestamp": 0,
        **changes,
    }
    return json.dumps(fields).encode()


def test_a_signing_worker_runs_signed_messages_and_dead_letters_the_rest(
    signed: flowkit.App, workers: Workers, rabbitmq_url: str
) -> None:
    worker = workers.start(TARGET, threads=2)
    worker.wait_started()
    run = pipeline.submit({"user": "ana", "token": "tok-ana-secret-1"})
    assert run.result(timeout=60) == len("tok-ana-secret-1")

    signed.broker.declare_queue(QUEUE)
    forged = [
        raw_message(),  # unsigned
        WirePolicy.build(["someone-else-0123456789"]).seal(raw_message(message_id="forged-2")),
        WirePolicy.build([KEY]).seal(raw_message(kwargs={"x": "y" * 70_000})),  # oversized
    ]
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as conn:
        channel = conn.channel()
        for body in forged:
            channel.basic_publish("", QUEUE, body)

    def letters() -> list[str]:
        return sorted(d.reason for d in signed.store.dead_letters.newest())

    reasons = " | ".join(wait_until(lambda: len(letters()) >= 3 and letters(), 60, what="3"))
    assert "rejected message: signature missing" in reasons
    assert "rejected message: signature does not match any accepted key" in reasons
    assert "rejected message: too large" in reasons
    assert "unknown step" not in worker.output()  # none was decoded far enough to run

    # The worker kept going, and a publisher still signing with the older key
    # (mid-rotation) is accepted.
    encoder = dramatiq.get_encoder()
    assert isinstance(encoder, RecordingEncoder)
    encoder.policy = WirePolicy.build([OLD_KEY])
    again = pipeline.submit({"user": "bo", "token": "tok-bo-secret-22"})
    assert again.result(timeout=60) == len("tok-bo-secret-22")
    log = worker.output()
    assert KEY not in log and OLD_KEY not in log
    assert "checking ana with token ***" in log
    assert "tok-ana-secret" not in log and "tok-bo-secret" not in log
