"""A loan-matching-shaped workflow for the RabbitMQ + PostgreSQL fan-out tests.

Each step writes its side effect into a ledger keyed by ``ctx.idempotency_key``
(so duplicated effects are impossible to hide) and counts raw executions (so
re-executions are visible), in the same PostgreSQL database flowkit uses.
"""

from __future__ import annotations

import os
import threading

import psycopg
from pydantic import BaseModel

import flowkit

_local = threading.local()


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        # FLOWKIT_TEST_LEDGER_URL: the ledger's own (direct) database URL, e.g. when
        # the workers' FLOWKIT_DATABASE_URL is a PgBouncer (tests/integration/test_pgbouncer.py)
        url = os.environ.get("FLOWKIT_TEST_LEDGER_URL") or os.environ["FLOWKIT_DATABASE_URL"]
        url = url.replace("postgresql+psycopg://", "postgresql://")
        conn = psycopg.connect(url, autocommit=True)
        _local.conn = conn
    return conn


def ledger(ctx: flowkit.Context) -> None:
    """Record one execution and (once per idempotency key) one effect."""
    c = _conn()
    c.execute("INSERT INTO it_executions (key) VALUES (%s)", (ctx.idempotency_key,))
    c.execute(
        "INSERT INTO it_effects (key) VALUES (%s) ON CONFLICT (key) DO NOTHING",
        (ctx.idempotency_key,),
    )


def create_ledger(url: str) -> None:
    with psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as c:
        c.execute("CREATE TABLE IF NOT EXISTS it_executions (id serial primary key, key text)")
        c.execute("CREATE TABLE IF NOT EXISTS it_effects (key text primary key)")


class Request(BaseModel):
    lenders: int
    work_ms: int = 0


class Lender(BaseModel):
    lender_id: int
    work_ms: int = 0


class Match(BaseModel):
    lender_id: int
    score: int


class Ranking(BaseModel):
    count: int
    best: list[int]


matching = flowkit.Workflow("it-matching", on="it:application")


@matching.step(queue="it.prepare")
def prepare(req: Request, ctx: flowkit.Context) -> list[Lender]:
    ledger(ctx)
    return [Lender(lender_id=i, work_ms=req.work_ms) for i in range(req.lenders)]


@matching.step(after=prepare, each=True, queue="it.match", timeout="60s")
def match(lender: Lender, ctx: flowkit.Context) -> Match:
    if lender.work_ms:
        threading.Event().wait(lender.work_ms / 1000)  # simulated work
    ledger(ctx)
    return Match(lender_id=lender.lender_id, score=(lender.lender_id * 7919) % 101)


@matching.step(after=match, queue="it.finalize")
def finalize(matches: list[Match], ctx: flowkit.Context) -> Ranking:
    ledger(ctx)
    ranked = sorted(matches, key=lambda m: (-m.score, m.lender_id))
    return Ranking(count=len(matches), best=[m.lender_id for m in ranked[:3]])


app = flowkit.App("it-lending", flows=[matching])
