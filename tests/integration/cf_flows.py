"""Child flows on RabbitMQ + PostgreSQL: a parent that calls a child per item, and waiters.

The join writes into a ledger in the same PostgreSQL database flowkit uses:
``cf_join_executions`` gets a row each time the join's function runs (the raw
count), ``cf_join_effects`` one row per parent run (``ON CONFLICT``), with the
results it joined and a ``hits`` counter.
"""

from __future__ import annotations

import json
import os
import threading
import time

import psycopg
from pydantic import BaseModel

import flowkit

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
            "CREATE TABLE IF NOT EXISTS cf_join_executions (id serial primary key, run_id text)"
        )
        c.execute(
            "CREATE TABLE IF NOT EXISTS cf_join_effects "
            "(run_id text primary key, n int, items text, hits int NOT NULL DEFAULT 1)"
        )


class Batch(BaseModel):
    parent: int
    children: int = 5
    work_ms: int = 0


class Item(BaseModel):
    parent: int
    item: int
    work_ms: int = 0


class Done(BaseModel):
    parent: int
    item: int


class Go(BaseModel):
    ok: bool = True


# -- the child: two steps per item ---------------------------------------------------
child = flowkit.Workflow("cf-child")


@child.step
def work(it: Item) -> Item:
    if it.work_ms:
        time.sleep(it.work_ms / 1000)  # the step's work, not a synchronisation
    return it


@child.step(after=work)
def finish_item(it: Item) -> Done:
    return Done(parent=it.parent, item=it.item)


# -- the parent: split, one child run per item, join ----------------------------------
parent = flowkit.Workflow("cf-parent")


@parent.step
def split(b: Batch) -> list[Item]:
    return [Item(parent=b.parent, item=i, work_ms=b.work_ms) for i in range(b.children)]


items = parent.call(child, after=split, each=True, name="items")


@parent.step(after=items)
def join(results: list[Done], ctx: flowkit.Context) -> int:
    c = _conn()
    c.execute("INSERT INTO cf_join_executions (run_id) VALUES (%s)", (ctx.run_id,))
    c.execute(
        "INSERT INTO cf_join_effects (run_id, n, items) VALUES (%s, %s, %s) "
        "ON CONFLICT (run_id) DO UPDATE SET hits = cf_join_effects.hits + 1",
        (ctx.run_id, len(results), json.dumps([r.item for r in results])),
    )
    return len(results)


# -- waiters: a child that waits for a signal, so its parent's step waits as a row ----
gate = flowkit.Workflow("cf-gate")


@gate.step
def hold(it: Item) -> Item:
    return it


@gate.step(after=hold, wait_for="go")
def release(it: Item, go: Go) -> Done:
    return Done(parent=it.parent, item=it.item)


waiter = flowkit.Workflow("cf-waiter")


@waiter.step
def begin(it: Item) -> Item:
    return it


waiter.call(gate, after=begin, name="gate")

quick = flowkit.Workflow("cf-quick")


@quick.step
def ping(n: int) -> int:
    return n + 1


app = flowkit.App("cf", flows=[parent, waiter, quick])
