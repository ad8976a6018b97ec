"""An async pipeline for the ``async def`` tests on RabbitMQ + PostgreSQL.

``wait_gate`` awaits until a file (the run's ``gate``) exists, so that a test holds
many steps in flight on one worker at once, then writes one ledger row per
``ctx.idempotency_key`` (``aio_effects``, with a ``hits`` counter: a step completed
twice would show ``hits > 1``); the ledger write runs in a thread, off the loop.
``note`` is a sync step after it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psycopg
from pydantic import BaseModel

import flowkit

FLOW = "it-aio"


def _dsn() -> str:
    return os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")


def create_ledger(url: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as c:
        c.execute(
            "CREATE TABLE IF NOT EXISTS aio_effects ("
            "key text primary key, hits int not null default 1, pid int not null)"
        )


def _ledger(key: str) -> None:
    with psycopg.connect(_dsn(), autocommit=True) as c:
        c.execute(
            "INSERT INTO aio_effects (key, pid) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET hits = aio_effects.hits + 1",
            (key, os.getpid()),
        )


class Job(BaseModel):
    n: int
    gate: str


@flowkit.stage(queue="itaio.wait")
async def wait_gate(job: Job, ctx: flowkit.Context) -> int:
    gate = Path(job.gate)
    while not gate.exists():  # the test opens the gate once the steps are in flight
        await asyncio.sleep(0.05)
    await asyncio.to_thread(_ledger, ctx.idempotency_key)
    return job.n


@flowkit.stage(queue="itaio.note")
def note(n: int) -> str:
    return f"done {n}"


pipeline = flowkit.Pipeline(FLOW, [wait_gate, note])
app = flowkit.App("it-aio", flows=[pipeline])
