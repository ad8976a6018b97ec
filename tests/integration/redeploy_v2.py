"""The expense flow after the redeploy: the wait step ``review`` is now ``approve``, and
``finish`` takes another input type (``Approved``, which carries the total)."""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Order(BaseModel):
    id: int


class Prepared(BaseModel):
    id: int
    total: int


class Approval(BaseModel):
    ok: bool


class Approved(BaseModel):
    id: int
    ok: bool
    total: int


expenses = flowkit.Workflow("rd-expenses")


@expenses.step(queue="rd.work")
def prepare(o: Order) -> Prepared:
    return Prepared(id=o.id, total=o.id * 10)


@expenses.step(after=prepare, wait_for="approval", queue="rd.work")
def approve(p: Prepared, approval: Approval) -> Approved:
    return Approved(id=p.id, ok=approval.ok, total=p.total)


@expenses.step(after=approve, queue="rd.work")
def finish(a: Approved) -> str:
    return f"{a.id}:{a.ok}:{a.total}"


app = flowkit.App("redeploy", flows=[expenses])


pipeline = flowkit.Workflow("rd-pipeline")


@pipeline.step(queue="rd.load")
def load(o: Order) -> Prepared:
    return Prepared(id=o.id, total=o.id)


@pipeline.step(after=load, queue="rd.enrich")
def enhance(p: Prepared) -> int:
    return p.total * 2


pipeline_app = flowkit.App("redeploy-pipeline", flows=[pipeline])
