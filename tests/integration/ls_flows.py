"""Flows for the LISTEN/NOTIFY tests of ``Run.wait`` on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import os

import psycopg

import flowkit

#: The advisory lock the test holds until its waiter is registered.
HOLD = 4343


@flowkit.stage(queue="ls.work")
def quick(n: int) -> int:
    return n + 1


def _held() -> None:
    # Returns once the test, which took the lock first, releases it.
    url = os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s)", (HOLD,))
        c.execute("SELECT pg_advisory_unlock(%s)", (HOLD,))


@flowkit.stage(queue="ls.work")
def held(n: int) -> int:
    _held()
    return n * 10


@flowkit.stage(queue="ls.work")
def held_late(n: int) -> int:
    _held()
    return n


@flowkit.stage(queue="ls.work", retries=0)
def broken(n: int) -> int:
    raise ValueError(f"broken {n}")


fast = flowkit.Pipeline("ls-fast", [quick])
slow = flowkit.Pipeline("ls-held", [held])
failing = flowkit.Pipeline("ls-broken", [broken])
timed = flowkit.Pipeline("ls-timed", [held_late], timeout="1s")

app = flowkit.App("ls", flows=[fast, slow, failing, timed])
