"""Flows for the worker-heartbeat tests on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import os

import psycopg

import flowkit

#: The advisory lock the test holds while it looks at the running step.
HOLD = 4242


@flowkit.stage(queue="wk.work")
def quick(n: int) -> int:
    return n + 1


@flowkit.stage(queue="wk.work")
def slow(n: int) -> int:
    # Held until the test, which took the lock first, has seen it running.
    url = os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        c.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))
    return n


fast = flowkit.Pipeline("wk-fast", [quick])
lasting = flowkit.Pipeline("wk-slow", [slow])

app = flowkit.App("wk", flows=[fast, lasting])
