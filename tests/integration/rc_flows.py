"""Flows for the recovery-gap tests on RabbitMQ + PostgreSQL: two steps, so the worker
thread that runs the first publishes the second."""

from __future__ import annotations

import flowkit


@flowkit.stage(queue="rc.first")
def add_one(n: int) -> int:
    return n + 1


@flowkit.stage(queue="rc.second")
def double(n: int) -> int:
    return n * 2


twice = flowkit.Pipeline("rc-twice", [add_one, double])

app = flowkit.App("rc", flows=[twice])
