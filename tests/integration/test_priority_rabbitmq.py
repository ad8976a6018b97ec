"""A prioritised run's priority is on every one of its messages, as RabbitMQ sees them.

Each step of these flows has a queue of its own that no worker serves (except
``pr.a``, served by a real ``flowkit worker``), so the test reads each message
straight from RabbitMQ (``basic_get``) and checks its AMQP ``priority``
property, then hands it to the Engine as a worker thread would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest

import flowkit
from flowkit.runtime.execute import Delivery
from flowkit.runtime.outcomes import StepFailed
from flowkit.runtime.plan import plan_completion
from flowkit.runtime.publisher import CONTROL_QUEUE, RunRef
from flowkit.store import Outcome

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import pr_flows  # noqa: E402
from fk_procs import Procs, wait_until  # noqa: E402

TARGET = f"{HERE / 'pr_flows.py'}:app"
PRIORITY = 7


class Queues:
    """Reads messages off RabbitMQ queues without a consumer."""

    def __init__(self, url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.conn.channel()

    def take(self, queue: str, run_id: str, timeout: float = 30) -> dramatiq.Message[Any]:
        """The next message of ``run_id`` on ``queue``; its AMQP priority must be the run's."""
        found: list[dramatiq.Message[Any]] = []

        def arrived() -> bool:
            try:
                method, props, body = self.channel.basic_get(queue, auto_ack=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                self.channel = self.conn.channel()  # not declared yet: nothing sent so far
                return False
            if method is None:
                return False
            message = dramatiq.Message(**dramatiq.get_encoder().decode(body))
            if message.kwargs.get("run_id") != run_id:
                return False  # another test's timer on a shared queue
            assert props.priority == PRIORITY, (queue, message.actor_name, props.priority)
            found.append(message)
            return True

        wait_until(arrived, timeout, f"a message of run {run_id} on {queue}")
        return found[0]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def priority_vhost(rabbitmq_url: str) -> Iterator[str]:
    """A vhost of this test's own: its queues are declared with ``x-max-priority``, which
    RabbitMQ refuses for a queue another test declared without it (``flowkit.control``)."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl is needed to make a vhost with priority queues")
    vhost = f"flowkit-prio-{uuid.uuid4().hex[:8]}"
    subprocess.run([ctl, "add_vhost", vhost], capture_output=True, check=True)
    subprocess.run(
        [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        capture_output=True,
        check=True,
    )
    try:
        yield rabbitmq_url.rsplit("/", 1)[0] + "/" + vhost
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True)


@pytest.fixture
def pr(pg_url: str, priority_vhost: str, tmp_path: Path) -> Iterator[tuple[Any, Procs, Queues]]:
    rabbitmq_url = priority_vhost
    env = {"FLOWKIT_BROKER_URL": rabbitmq_url, "FLOWKIT_DATABASE_URL": pg_url}
    os.environ.update(env)
    app = pr_flows.app
    app.configure(broker_url=rabbitmq_url, database_url=pg_url, embedded_worker=False)
    app.store  # noqa: B018 - schema first
    procs = Procs(env, tmp_path)
    queues = Queues(rabbitmq_url)
    try:
        yield app, procs, queues
    finally:
        queues.close()
        procs.stop()
        app.close()
        for k in env:
            os.environ.pop(k, None)


def _deliver(app: Any, flow: str, message: dramatiq.Message[Any]) -> None:
    """What the step's actor does with a delivered message."""
    graph = app.engine.flow(flow)
    step = message.actor_name.split(".", 1)[1]
    app.engine.execute(
        graph, graph.steps[step], message.kwargs["step_id"], Delivery.of(flow, message)
    )


def test_a_worker_publishes_the_next_step_and_a_signal_resumes_with_the_priority(
    pr: Any,
) -> None:
    _, procs, queues = pr
    procs.start("worker", TARGET, "--queues", "pr.a", "--threads", "2")
    run = pr_flows.chain.submit(1, priority=PRIORITY)
    queues.take("pr.c", run.id)  # published by the worker process after "first"
    waiting = pr_flows.signalled.submit(1, priority=PRIORITY)
    wait_until(lambda: waiting.status() is flowkit.RunStatus.WAITING, 60, "the signal wait")
    assert waiting.signal("go", {"ok": True})
    queues.take("pr.b", waiting.id)


def test_a_signal_timeout_and_a_long_timer_hop_keep_the_priority(pr: Any) -> None:
    app, _, queues = pr
    run = pr_flows.impatient.submit(1, priority=PRIORITY)
    timer = queues.take("pr.t.DQ", run.id)
    eta = timer.options["eta"] / 1000
    wait_until(lambda: datetime.now(timezone.utc).timestamp() > eta + 0.1, 10, "the wait's end")
    _deliver(app, "pr-impatient", timer)  # timed out: runs without the signal
    queues.take("pr.t", run.id)

    later = pr_flows.later.submit(1, priority=PRIORITY)
    hop = queues.take("pr.d.DQ", later.id)
    assert hop.options["eta"] - hop.message_timestamp < 60_000  # a 200 ms hop of a 1 h delay
    _deliver(app, "pr-later", hop)  # not due yet: sent again
    queues.take("pr.d.DQ", later.id)


def test_a_redelivery_a_deadline_and_a_redrive_keep_the_priority(pr: Any) -> None:
    app, _, queues = pr
    run = pr_flows.chain.submit(1, priority=PRIORITY)
    message = queues.take("pr.a", run.id)
    # The worker recorded "first" and died before publishing "second".
    claim = app.store.runs.claim(
        message.kwargs["step_id"], message.message_id, lease_ms=60_000, starts_run=True
    )
    assert claim is not None
    graph = app.engine.flow("pr-chain")
    plan = plan_completion(graph, "first", None, 2)
    outcome = Outcome(output=2, inserts=plan.inserts)
    assert app.store.runs.complete(message.kwargs["step_id"], message.message_id, run.id, outcome)
    redelivered = Delivery(RunRef.of_message("pr-chain", message), message.message_id, True)
    app.engine.execute(graph, graph.steps["first"], message.kwargs["step_id"], redelivered)
    queues.take("pr.c", run.id)

    bounded = pr_flows.bounded.submit(1, priority=PRIORITY)
    deadline = queues.take(f"{CONTROL_QUEUE}.DQ", bounded.id)
    app.engine.on_control("deadline", RunRef.of_message("", deadline))  # not yet: hops
    queues.take(f"{CONTROL_QUEUE}.DQ", bounded.id)

    failed = pr_flows.failing.submit(1, priority=PRIORITY)
    with pytest.raises(StepFailed):
        _deliver(app, "pr-failing", queues.take("pr.g", failed.id))
    assert failed.status() is flowkit.RunStatus.FAILED
    assert failed.retry() == ["refuse"]
    queues.take("pr.g", failed.id)
