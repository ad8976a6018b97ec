"""The expense flow before the redeploy of ``test_redeploy_rabbitmq.py``."""

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


class Reviewed(BaseModel):
    id: int
    ok: bool


expenses = flowkit.Workflow("rd-expenses")


@expenses.step(queue="rd.work")
def prepare(o: Order) -> Prepared:
    return Prepared(id=o.id, total=o.id * 10)


@expenses.step(after=prepare, wait_for="approval", queue="rd.work")
def review(p: Prepared, approval: Approval) -> Reviewed:
    return Reviewed(id=p.id, ok=approval.ok)


@expenses.step(after=review, queue="rd.work")
def finish(r: Reviewed) -> str:
    return f"{r.id}:{r.ok}"


app = flowkit.App("redeploy", flows=[expenses])


# A rolling deploy: this pipeline's `enrich` is renamed `enhance` in v2, while v1's
# submitters and workers still run.
pipeline = flowkit.Workflow("rd-pipeline")


@pipeline.step(queue="rd.load")
def load(o: Order) -> Prepared:
    return Prepared(id=o.id, total=o.id)


@pipeline.step(after=load, queue="rd.enrich")
def enrich(p: Prepared) -> int:
    return p.total


pipeline_app = flowkit.App("redeploy-pipeline", flows=[pipeline])
