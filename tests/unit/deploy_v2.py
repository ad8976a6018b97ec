"""Version 2 of the flows of the redeploy tests: the wait step ``review`` is renamed
``approve``, ``finish`` takes another input type, and ``score``'s input gained a field."""

from __future__ import annotations

from pydantic import BaseModel, Field

import flowkit


class Order(BaseModel):
    id: int


class Prepared(BaseModel):
    """An order, priced (the docstring changed: no run notices)."""

    id: int
    total: int


class Approval(BaseModel):
    ok: bool


class Approved(BaseModel):
    id: int
    ok: bool
    total: int


class Item(BaseModel):
    name: str
    weight: int


expenses = flowkit.Workflow("deploy-expenses")


@expenses.step
def prepare(o: Order) -> Prepared:
    return Prepared(id=o.id, total=o.id * 10)


@expenses.step(after=prepare, wait_for="approval")
def approve(p: Prepared, approval: Approval) -> Approved:
    return Approved(id=p.id, ok=approval.ok, total=p.total)


@expenses.step(after=approve)
def finish(a: Approved) -> str:
    return f"{a.id}:{a.ok}:{a.total}"


scoring = flowkit.Workflow("deploy-scoring")


@scoring.step
def intake(name: str) -> Item:
    return Item(name=name, weight=1)


@scoring.step(after=intake, queue="deploy.slow")
def score(item: Item) -> int:
    return len(item.name) * item.weight


described = flowkit.Workflow("deploy-described")


class Note(BaseModel):
    text: str = Field(description="the note's words, described anew")


@described.step
def note(n: Note) -> Note:
    """Version two's docstring: a different one."""
    return n


app = flowkit.App("deploy", flows=[expenses, scoring])
