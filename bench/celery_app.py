"""Celery, a peer: a chain of six no-op tasks on six queues, no result backend.

Workers run as real ``celery worker`` processes (threads pool, concurrency 8)::

    celery -A bench.celery_app worker --pool threads --concurrency 8 -Q celery.s0,...

The last task reports to the ``bench.done`` queue with the item's start time, in
the body raw Dramatiq's report has, so the harness measures both the same way.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, chain

#: The six stage queues, one per task, as raw Dramatiq's pipeline has.
QUEUES = [f"celery.s{i}" for i in range(6)]


def make_app(url: str) -> Celery:
    """A Celery app on ``url``: no result backend, each task routed to its own queue."""
    app = Celery("bench_celery", broker=url, set_as_current=False)
    app.conf.update(
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_routes={f"c_s{i}": {"queue": q} for i, q in enumerate(QUEUES)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//"))


def _make(i: int) -> Any:
    def step(value: list[float]) -> list[float]:
        return value

    step.__name__ = f"c_s{i}"
    return app.task(name=f"c_s{i}")(step)


stages = [_make(i) for i in range(5)]


@app.task(name="c_s5")
def last(value: list[float]) -> None:
    x, started = value
    with app.producer_or_acquire() as producer:
        producer.publish(
            {"args": [x, started, time.time()]},
            exchange="",
            routing_key="bench.done",
            serializer="json",
        )


def pipeline_for(client: Celery, x: int) -> None:
    """Send item ``x`` through the chain of six from ``client`` (a :func:`make_app`)."""
    started = time.time()
    sigs = [client.signature("c_s0", args=([x, started],))]
    sigs += [client.signature(f"c_s{i}") for i in range(1, 6)]
    chain(*sigs, app=client).apply_async()
