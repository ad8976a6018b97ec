"""The flows the fault suite runs, each step writing into a ledger.

The ledger lives in the same PostgreSQL database as flowkit's tables:

- ``fk_executions``: one row each time a step function starts (the raw
  count: a step re-run after a crash shows up twice here);
- ``fk_effects``: one row per ``ctx.idempotency_key``, written when the step's
  work is done with ``ON CONFLICT`` (the exactly-once effect a real step makes
  with its key), with a ``hits`` counter of how often it was attempted.

A step's effect is duplicated if one (run, step, item) ever produced two
different keys, or if flowkit recorded the step twice.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime

import psycopg
from pydantic import BaseModel, Field

import flowkit

_local = threading.local()

LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS fk_executions ("
    "id bigserial primary key, key text not null, run_id text not null, "
    "step text not null, attempt int not null, pid int not null, "
    "at timestamptz not null default clock_timestamp())",
    "CREATE TABLE IF NOT EXISTS fk_effects ("
    "key text primary key, run_id text not null, step text not null, "
    "hits int not null default 1)",
)


def _dsn() -> str:
    return os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")


def _conn() -> psycopg.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        # FLOWKIT_TEST_LEDGER_URL: the ledger's own direct URL, when the workers'
        # database URL is a PgBouncer (test_pgbouncer_faults.py)
        own = os.environ.get("FLOWKIT_TEST_LEDGER_URL")
        dsn = own.replace("postgresql+psycopg://", "postgresql://") if own else _dsn()
        conn = psycopg.connect(dsn if own else dsn.split("?", 1)[0], autocommit=True)
        _local.conn = conn
    return conn


def _write(sql: str, params: tuple[object, ...]) -> None:
    for attempt in range(3):  # the ledger rides out the database outages we cause
        try:
            _conn().execute(sql, params)  # type: ignore[arg-type]
            return
        except psycopg.OperationalError:
            _local.conn = None
            if attempt == 2:
                raise
            threading.Event().wait(1.0)  # back off before reconnecting, not a sync


def begin(ctx: flowkit.Context) -> None:
    """An execution starts (the raw count: a step re-run after a crash shows up twice)."""
    _write(
        "INSERT INTO fk_executions (key, run_id, step, attempt, pid) VALUES (%s, %s, %s, %s, %s)",
        (ctx.idempotency_key, ctx.run_id, ctx.step, ctx.attempt, os.getpid()),
    )


def effect(ctx: flowkit.Context) -> None:
    """The step's side effect, made once per idempotency key however often the step runs."""
    _write(
        "INSERT INTO fk_effects (key, run_id, step) VALUES (%s, %s, %s) "
        "ON CONFLICT (key) DO UPDATE SET hits = fk_effects.hits + 1",
        (ctx.idempotency_key, ctx.run_id, ctx.step),
    )


def _work(ms: int) -> None:
    if ms:
        threading.Event().wait(ms / 1000)  # simulated work inside the step, not a sync


class Order(BaseModel):
    n: int = Field(ge=0)
    work_ms: int = 0
    #: step b returns an output that does not match c's input (a bug in a step)
    bad_output: bool = False


class Trail(BaseModel):
    n: int
    work_ms: int = 0
    seen: list[str]
    bad_output: bool = False


@flowkit.stage(queue="fk.a", retries=3, timeout="30s")
def a(order: Order, ctx: flowkit.Context) -> Trail:
    begin(ctx)
    _work(order.work_ms)
    effect(ctx)
    return Trail(n=order.n, work_ms=order.work_ms, seen=["a"], bad_output=order.bad_output)


@flowkit.stage(queue="fk.b", retries=3, timeout="30s")
def b(t: Trail, ctx: flowkit.Context) -> Trail:
    begin(ctx)
    _work(t.work_ms)
    effect(ctx)
    if t.bad_output:
        return {"n": "not a number", "seen": t.seen}  # type: ignore[return-value]
    return Trail(n=t.n, work_ms=t.work_ms, seen=[*t.seen, "b"])


@flowkit.stage(queue="fk.c", retries=3, timeout="30s")
def c(t: Trail, ctx: flowkit.Context) -> int:
    begin(ctx)
    _work(t.work_ms)
    effect(ctx)
    return t.n


ledger = flowkit.Pipeline("fk", [a, b, c])


class Poison(BaseModel):
    crash: bool = True


@flowkit.stage(queue="fk.poison", retries=2, timeout="30s")
def poison(p: Poison, ctx: flowkit.Context) -> str:
    begin(ctx)
    if p.crash:
        os._exit(70)  # a crash no exception handler sees (native code, the OOM killer)
    effect(ctx)
    return "ok"


crashing = flowkit.Pipeline("fk-poison", [poison])


class Slow(BaseModel):
    n: int
    work_ms: int = 4000


@flowkit.stage(queue="fk.slow", retries=3, timeout="60s")
def slow(s: Slow, ctx: flowkit.Context) -> int:
    begin(ctx)
    _work(s.work_ms)
    effect(ctx)
    return s.n


long_steps = flowkit.Pipeline("fk-long", [slow])


@flowkit.stage(queue="fk.tick", retries=3, timeout="30s")
def tick(at: datetime, ctx: flowkit.Context) -> str:
    begin(ctx)
    effect(ctx)
    return at.isoformat()


ticking = flowkit.Pipeline("fk-tick", [tick], schedule="0 3 * * *")

app = flowkit.App("faults", flows=[ledger, crashing, long_steps, ticking])
