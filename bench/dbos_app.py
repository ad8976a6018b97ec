"""DBOS, a peer: a six-step durable workflow on PostgreSQL, run from a DBOS queue.

A worker process (``python -m bench.dbos_app``) launches DBOS on the system database
``BENCH_DBOS_URL`` and serves the queue ``bench6``, polled every 50 ms, at most 8
workflows at once per process (as 8 threads). The harness enqueues items one by
one with a ``DBOSClient`` and reads throughput and latency from DBOS's own
``workflow_status`` table (``created_at`` at enqueue, ``updated_at`` at the end).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from dbos import DBOS

NAME = "bench-dbos"
QUEUE = "bench6"
WORKFLOW = "bench6"
POLLING_SECONDS = 0.05
WORKER_CONCURRENCY = 8


def _make(i: int) -> Any:
    def step(x: int) -> int:
        return x

    step.__name__ = step.__qualname__ = f"s{i}"
    return DBOS.step(name=f"s{i}")(step)


stages = [_make(i) for i in range(6)]


@DBOS.workflow(name=WORKFLOW)
def bench6(x: int) -> int:
    for s in stages:
        x = s(x)
    return x


def main() -> None:
    DBOS(
        config={
            "name": NAME,
            "system_database_url": os.environ["BENCH_DBOS_URL"],
            "executor_id": f"bench-{os.getpid()}",  # two processes are two executors
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    DBOS.register_queue(
        QUEUE, polling_interval_sec=POLLING_SECONDS, worker_concurrency=WORKER_CONCURRENCY
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("bench-dbos ready", flush=True)  # the harness waits for this line in the log
    while not stop.wait(0.5):
        pass
    DBOS.destroy(workflow_completion_timeout_sec=5)


if __name__ == "__main__":
    main()
