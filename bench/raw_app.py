"""Raw Dramatiq, the baseline: a six-actor pipeline and a 1,000-child group.

The last actor reports to the ``bench.done`` queue with the item's start time,
so the harness measures latency on the workers' clock like flowkit's rows do.

Publisher confirms are off, Dramatiq's default, unless ``BENCH_RAW_CONFIRM=1``:
the harness runs both variants and takes confirms off as the baseline.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import GroupCallbacks
from dramatiq.rate_limits.backends import StubBackend

#: Wait for RabbitMQ to confirm each publish (what flowkit does today), or not (the default).
CONFIRM = os.environ.get("BENCH_RAW_CONFIRM", "0") not in ("", "0")

broker = RabbitmqBroker(url=os.environ["BENCH_AMQP"], confirm_delivery=CONFIRM)
broker.add_middleware(GroupCallbacks(StubBackend()))
dramatiq.set_broker(broker)


def _make(i: int) -> dramatiq.Actor:  # type: ignore[type-arg]
    def step(value: list[float]) -> list[float]:
        return value

    step.__name__ = f"raw_s{i}"
    return dramatiq.actor(step, queue_name=f"raw.s{i}", actor_name=f"raw_s{i}")


stages = [_make(i) for i in range(5)]


@dramatiq.actor(queue_name="raw.s5", actor_name="raw_s5")
def raw_last(result: list[float]) -> None:
    x, started = result
    report.send(x, started, time.time())


@dramatiq.actor(queue_name="bench.done", actor_name="bench_report")
def report(x: int, started: float, finished: float) -> None:  # consumed by the harness
    pass


@dramatiq.actor(queue_name="raw.fan", actor_name="raw_child")
def raw_child(i: int) -> None:
    # Returns nothing: a group's callback gets no results, and a value without the Results
    # middleware makes Dramatiq log a warning per child, inside the timed baseline.
    pass


@dramatiq.actor(queue_name="raw.fan", actor_name="raw_callback")
def raw_callback(started: float) -> None:
    report.send(-1, started, time.time())


def pipeline_for(x: int) -> dramatiq.pipeline:
    started = time.time()
    msgs = [stages[0].message([x, started])]
    msgs += [s.message() for s in stages[1:]]
    msgs.append(raw_last.message())
    return dramatiq.pipeline(msgs, broker=broker)
