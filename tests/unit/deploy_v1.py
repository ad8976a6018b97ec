"""Version 1 of the flows of the redeploy tests (``deploy_v2.py`` is what gets deployed)."""

from __future__ import annotations

from pydantic import BaseModel, Field

import flowkit


class Order(BaseModel):
    id: int


class Prepared(BaseModel):
    """An order, priced."""

    id: int
    total: int


class Approval(BaseModel):
    ok: bool


class Reviewed(BaseModel):
    id: int
    ok: bool


class Item(BaseModel):
    name: str


expenses = flowkit.Workflow("deploy-expenses")


@expenses.step
def prepare(o: Order) -> Prepared:
    return Prepared(id=o.id, total=o.id * 10)


@expenses.step(after=prepare, wait_for="approval")
def review(p: Prepared, approval: Approval) -> Reviewed:
    return Reviewed(id=p.id, ok=approval.ok)


@expenses.step(after=review)
def finish(r: Reviewed) -> str:
    return f"{r.id}:{r.ok}"


scoring = flowkit.Workflow("deploy-scoring")


@scoring.step
def intake(name: str) -> Item:
    return Item(name=name)


@scoring.step(after=intake, queue="deploy.slow")
def score(item: Item) -> int:
    return len(item.name)


described = flowkit.Workflow("deploy-described")


class Note(BaseModel):
    text: str = Field(description="what the note says")


@described.step
def note(n: Note) -> Note:
    """Version one's docstring."""
    return n


app = flowkit.App("deploy", flows=[expenses, scoring])
