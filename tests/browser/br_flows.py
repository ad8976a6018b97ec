"""Flows for the dashboard's browser suite, on RabbitMQ + PostgreSQL with real workers.

Every step records its execution in ``br_ledger`` (the test's own table), so a test can
tell which steps ran again after a retry from the UI.
"""

from __future__ import annotations

import os

import psycopg
from pydantic import BaseModel

import flowkit


def _db() -> str:
    return os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")


def ledger(what: str) -> None:
    with psycopg.connect(_db(), autocommit=True) as c:
        c.execute("INSERT INTO br_ledger (what) VALUES (%s)", (what,))


def broken(name: str) -> bool:
    with psycopg.connect(_db(), autocommit=True) as c:
        row = c.execute("SELECT 1 FROM br_broken WHERE name = %s", (name,)).fetchone()
    return row is not None


class Order(BaseModel):
    ref: str
    amount: int


@flowkit.stage(queue="br.work", retries=0)
def receive(order: Order, ctx: flowkit.Context) -> Order:
    ledger(f"{ctx.run_id}:receive")
    return order


@flowkit.stage(queue="br.work", retries=0)
def price(order: Order, ctx: flowkit.Context) -> Order:
    ledger(f"{ctx.run_id}:price")
    return Order(ref=order.ref, amount=order.amount * 2)


@flowkit.stage(queue="br.work", retries=0)
def book(order: Order, ctx: flowkit.Context) -> int:
    ledger(f"{ctx.run_id}:book")
    if broken("book"):
        raise flowkit.PermanentError("the ledger is closed")
    return order.amount


orders = flowkit.Pipeline("br-orders", [receive, price, book])

fan = flowkit.Workflow("br-fan")


@fan.step(queue="br.work")
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True, queue="br.work")
def square(i: int) -> int:
    return i * i


@fan.step(after=square, queue="br.work")
def total(values: list[int]) -> int:
    return sum(values)


class Decision(BaseModel):
    approver: str
    approved: bool


approvals = flowkit.Workflow("br-approvals")


@approvals.step(queue="br.work")
def ask(order: Order) -> Order:
    return order


@approvals.step(after=ask, wait_for="decision", queue="br.work")
def decide(order: Order, decision: Decision) -> str:
    return f"{decision.approver}:{decision.approved}"


app = flowkit.App("br", flows=[orders, fan, approvals])
