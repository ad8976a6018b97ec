"""Flows for the durable-control tests on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import os
import threading

import psycopg
from pydantic import BaseModel

import flowkit


def count(key: str) -> None:
    """Record one execution in the test's ledger (same PostgreSQL database)."""
    url = os.environ["FLOWKIT_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO ctl_ledger (key) VALUES (%s)", (key,))


class Request(BaseModel):
    amount: int
    fail: bool = False


class Approval(BaseModel):
    approver: str
    ok: bool


approvals = flowkit.Workflow("ctl-approvals")


@approvals.step(queue="ctl.work")
def prepare(r: Request, ctx: flowkit.Context) -> Request:
    count(f"{ctx.run_id}:prepare")
    return r


@approvals.step(after=prepare, wait_for="approval", timeout="60s", queue="ctl.work")
def decide(r: Request, approval: Approval, ctx: flowkit.Context) -> str:
    count(f"{ctx.run_id}:decide")
    if r.fail and approval.approver != "fixed":
        raise flowkit.PermanentError("the ledger refused it")
    return f"{approval.approver}:{approval.ok}"


impatient = flowkit.Workflow("ctl-impatient")


@impatient.step(wait_for="approval", timeout="1s", queue="ctl.work")
def wait_briefly(r: Request, approval: Approval) -> str:
    return approval.approver


deadline = flowkit.Workflow("ctl-deadline", timeout="2s")


@deadline.step(queue="ctl.work")
def slow(r: Request, ctx: flowkit.Context) -> int:
    while not ctx.cancelled:
        threading.Event().wait(0.05)  # simulated long work, checking for cancellation
    return 0


fan = flowkit.Workflow("ctl-fan")


@fan.step(queue="ctl.work")
def split(n: int) -> list[int]:
    return list(range(n))


@fan.step(after=split, each=True, queue="ctl.work")
def item(i: int, ctx: flowkit.Context) -> int:
    for _ in range(200):  # up to 10 s of simulated work, stopping when cancelled
        if ctx.cancelled:
            break
        threading.Event().wait(0.05)
    return i


@fan.step(after=item, queue="ctl.work")
def total(xs: list[int], ctx: flowkit.Context) -> int:
    count(f"{ctx.run_id}:total")
    return sum(xs)


@flowkit.stage(queue="ctl.work")
def one(x: int, ctx: flowkit.Context) -> int:
    count(f"{ctx.run_id}:one")
    return x + 1


@flowkit.stage(queue="ctl.work")
def two(x: int, ctx: flowkit.Context) -> int:
    count(f"{ctx.run_id}:two")
    return x * 2


@flowkit.stage(queue="ctl.work")
def three(x: int, ctx: flowkit.Context) -> int:
    count(f"{ctx.run_id}:three")
    return x - 1


pipeline = flowkit.Pipeline("ctl-chain", [one, two, three])

ticking = flowkit.Workflow("ctl-ticking", schedule="* * * * *", schedule_input=1)


@ticking.step(queue="ctl.work")
def tick(x: int, ctx: flowkit.Context) -> int:
    count(f"{ctx.run_id}:tick")
    return x


app = flowkit.App("ctl", flows=[approvals, impatient, deadline, fan, pipeline, ticking])
