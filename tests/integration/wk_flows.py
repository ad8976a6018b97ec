"""Flows for the worker-heartbeat tests on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import time

import flowkit


@flowkit.stage(queue="wk.work")
def quick(n: int) -> int:
    return n + 1


@flowkit.stage(queue="wk.work")
def slow(n: int) -> int:
    # Long enough for the test to see the step among its worker's running steps.
    time.sleep(3)
    return n


fast = flowkit.Pipeline("wk-fast", [quick])
lasting = flowkit.Pipeline("wk-slow", [slow])

app = flowkit.App("wk", flows=[fast, lasting])
