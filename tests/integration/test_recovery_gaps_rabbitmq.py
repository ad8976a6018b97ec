"""Dead letters and publishing connections with a real `flowkit worker` on RabbitMQ + PostgreSQL.

Malformed bodies published straight to a queue cost one WARNING line each and
no traceback, and are recorded with their queue and reason; a publishing
connection RabbitMQ closes costs one line, and the next publish succeeds.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from helpers import (  # noqa: F401 - fixtures
    Workers,
    bound_app,
    env_fixture,
    query,
    wait_until,
    workers_fixture,
)

import flowkit

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import rc_flows  # noqa: E402
from rmq_conns import close_named, connections, vhost_of  # noqa: E402

TARGET = f"{HERE / 'rc_flows.py'}:app"
QUEUE = "rc.first"


@pytest.fixture
def rc(pg_url: str, rabbitmq_url: str) -> Iterator[flowkit.App]:
    with bound_app(rc_flows.app, pg_url, rabbitmq_url) as app:
        yield app


def body(**changes: Any) -> bytes:
    fields = {
        "queue_name": QUEUE,
        "actor_name": "rc-twice.add_one",
        "args": [],
        "kwargs": {"step_id": "s", "run_id": "r", "key": None},
        "options": {},
        "message_id": "m",
        "message_timestamp": 0,
        **changes,
    }
    return json.dumps(fields).encode()


MALFORMED = [
    *(b"not json %d" % i for i in range(4)),
    b"\xff\xfe not utf-8",
    b"[1, 2, 3]",
    json.dumps({"queue_name": QUEUE}).encode(),
    body(args="x"),
    body(actor_name="os.system", message_id="m-actor-1"),
    body(actor_name="rc-twice.nope", message_id="m-actor-2"),
    body(kwargs={"step_id": "no-such-step", "run_id": "r-1"}, message_id="m-step-1"),
    body(kwargs={"step_id": "no-such-step-2", "run_id": "r-2"}, message_id="m-step-2"),
    body(kwargs={}, message_id="m-args-1"),
    body(kwargs={"step_id": "s", "run_id": "r", "extra": 1}, message_id="m-args-2"),
    body(args=["positional"], message_id="m-args-3"),
]


def test_fifteen_malformed_bodies_cost_one_warning_line_each_and_no_traceback(
    rc: flowkit.App, workers: Workers, rabbitmq_url: str
) -> None:
    assert len(MALFORMED) == 15
    worker = workers.start(TARGET, threads=2)
    worker.wait_started()
    with pika.BlockingConnection(pika.URLParameters(rabbitmq_url)) as conn:
        channel = conn.channel()
        for b in MALFORMED:
            channel.basic_publish("", QUEUE, b)

    def fifteen() -> list[Any] | None:
        got = rc.store.dead_letters.newest()
        return got if len(got) >= 15 else None

    letters = wait_until(fifteen, 60, what="15 dead letters")
    assert len(letters) == 15
    assert {d.queue for d in letters} == {QUEUE}  # undecodable ones too
    reasons = sorted(d.reason for d in letters)
    assert sum(r.startswith("undecodable message") for r in reasons) == 5
    assert sum(r.startswith("unknown step: no step 'no-such-step") for r in reasons) == 2
    assert sum(r.startswith("unknown stage") for r in reasons) == 2
    assert sum(r.startswith("malformed message") for r in reasons) == 6
    # The worker still runs real work after them...
    assert rc_flows.twice.submit(20).result(timeout=60) == 42
    log = worker.output()
    lines = [line for line in log.splitlines() if "dead letter from queue" in line]
    assert len(lines) == 15, log
    assert all("WARNING" in line for line in lines), lines
    # ... and logged no traceback, and nothing about them at ERROR.
    assert "Traceback" not in log, log
    assert not re.search(r"\bERROR\b", log), log


def test_a_publishing_connection_closed_by_rabbitmq_costs_one_line_and_the_next_publish_works(
    rc: flowkit.App, workers: Workers, rabbitmq_url: str, pg_url: str
) -> None:
    vhost = vhost_of(rabbitmq_url)
    worker = workers.start(TARGET, "--no-chain", threads=1)  # it publishes the second step
    worker.wait_started()
    assert rc_flows.twice.submit(1).result(timeout=60) == 4  # its thread has published once
    (wid,) = [r[0] for r in query(pg_url, "SELECT id FROM flowkit_workers")]
    name = f"flowkit {wid} {worker.pid}"
    wait_until(lambda: any(n == name for _, n in connections(vhost)), 30, what="named connections")
    # This worker's connections only (other tests' stay open): consumers and publisher.
    assert close_named(vhost, name, "flowkit test: closed from the server side") >= 2
    assert rc_flows.twice.submit(2).result(timeout=60) == 6
    log = worker.output()
    lines = [line for line in log.splitlines() if "publishing connection" in line]
    assert len(lines) == 1, log
    assert "reconnecting" in lines[0] and "CONNECTION_FORCED" in lines[0], lines
    assert " pika." not in log and "/pika/" not in log, log  # no pika line, no pika traceback
