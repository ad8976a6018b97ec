"""A four-stage pipeline for the crash and duplicate-delivery tests.

Each stage takes a few milliseconds of simulated work (so steps are really in
flight when a worker is killed) and writes into a ledger in the same
PostgreSQL database flowkit uses:

- ``kill_executions``: one row per execution of a stage function (raw count:
  re-executions after a crash show up here);
- ``kill_effects``: one row per ``ctx.idempotency_key``, inserted with
  ``ON CONFLICT DO NOTHING`` (the exactly-once effect a real stage would make
  with an idempotency key) plus a ``hits`` counter of how often it was tried.
"""

from __future__ import annotations

import os
import threading

import psycopg
from pydantic import BaseModel

import flowkit

STAGES = ("receive", "enrich", "decide", "notify")
FLOW = "it-kill"

_local = threading.local()


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        url = os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        conn = psycopg.connect(url, autocommit=True)
        _local.conn = conn
    return conn


def create_ledger(url: str) -> None:
    with psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as c:
        c.execute(
            "CREATE TABLE IF NOT EXISTS kill_executions ("
            "id bigserial primary key, key text not null, run_id text not null, "
            "step text not null, attempt int not null, pid int not null, "
            "at timestamptz not null default clock_timestamp())"
        )
        c.execute(
            "CREATE TABLE IF NOT EXISTS kill_effects ("
            "key text primary key, hits int not null default 1)"
        )


def ledger(ctx: flowkit.Context) -> None:
    c = _conn()
    c.execute(
        "INSERT INTO kill_executions (key, run_id, step, attempt, pid) VALUES (%s, %s, %s, %s, %s)",
        (ctx.idempotency_key, ctx.run_id, ctx.step, ctx.attempt, os.getpid()),
    )
    c.execute(
        "INSERT INTO kill_effects (key) VALUES (%s) "
        "ON CONFLICT (key) DO UPDATE SET hits = kill_effects.hits + 1",
        (ctx.idempotency_key,),
    )


def _work(ms: int) -> None:
    if ms:
        threading.Event().wait(ms / 1000)  # simulated work inside the stage, not a sync


def cut_connections(application_name: str) -> int:
    """Terminate every database session named ``application_name`` (a database blip)."""
    return len(
        _conn()
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        )
        .fetchall()
    )


class Order(BaseModel):
    n: int
    work_ms: int = 0
    #: enrich's first attempt cuts the sessions of this application_name after its work
    blip: str | None = None


class Trail(BaseModel):
    n: int
    work_ms: int = 0
    seen: list[str]
    blip: str | None = None


@flowkit.stage(queue="itk.receive", retries=3, timeout="30s")
def receive(order: Order, ctx: flowkit.Context) -> Trail:
    _work(order.work_ms)
    ledger(ctx)
    return Trail(n=order.n, work_ms=order.work_ms, seen=["receive"], blip=order.blip)


@flowkit.stage(queue="itk.enrich", retries=3, timeout="30s")
def enrich(t: Trail, ctx: flowkit.Context) -> Trail:
    _work(t.work_ms)
    ledger(ctx)
    if t.blip and ctx.attempt == 1:
        # The database goes away under the worker after the work, before the
        # completion is recorded (a restart, a failover, a network cut).
        cut_connections(t.blip)
    return Trail(n=t.n, work_ms=t.work_ms, seen=[*t.seen, "enrich"])


@flowkit.stage(queue="itk.decide", retries=3, timeout="30s")
def decide(t: Trail, ctx: flowkit.Context) -> Trail:
    _work(t.work_ms)
    ledger(ctx)
    return Trail(n=t.n, work_ms=t.work_ms, seen=[*t.seen, "decide"])


@flowkit.stage(queue="itk.notify", retries=3, timeout="30s")
def notify(t: Trail, ctx: flowkit.Context) -> Trail:
    _work(t.work_ms)
    ledger(ctx)
    return Trail(n=t.n, work_ms=t.work_ms, seen=[*t.seen, "notify"])


pipeline = flowkit.Pipeline(FLOW, [receive, enrich, decide, notify])
app = flowkit.App("it-kill", flows=[pipeline])
