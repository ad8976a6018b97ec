"""The next release: ``review`` is renamed ``approve`` and ``book`` takes a ``Decision``."""

from __future__ import annotations

from pydantic import BaseModel

import flowkit


class Expense(BaseModel):
    id: int
    amount: int


class Approval(BaseModel):
    ok: bool


class Decision(BaseModel):
    id: int
    ok: bool
    amount: int


expenses = flowkit.Workflow("expenses")


@expenses.step
def check(e: Expense) -> Expense:
    return e


@expenses.step(after=check, wait_for="approval")
def approve(e: Expense, approval: Approval) -> Decision:
    return Decision(id=e.id, ok=approval.ok, amount=e.amount)


@expenses.step(after=approve)
def book(d: Decision) -> str:
    return f"expense {d.id}: {d.amount} {'booked' if d.ok else 'rejected'}"


app = flowkit.App("expenses", flows=[expenses])
